"""Client settings from the environment; constructor arguments override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """`REMOTE_INFERENCE_*` choose the mode, the server and its credentials; `MODELS_DIR`,
    `ALLOW_UNSAFE_LOADING` and `MAX_BODY_BYTES` are the runtime's own settings, reused so
    that local mode loads and refuses exactly what a server would."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    remote_inference_enabled: bool = False
    remote_inference_url: str = "http://localhost:8000"
    remote_inference_timeout: float = 30.0
    # the runtime's AUTH_TOKENS_DIR and TLS (docs/client.md): a bearer token, or a file
    # holding one (re-read when it changes: a mounted Secret rotates in place), and the
    # CA that signed the runtime's certificate (https:// and grpcs:// URLs). The token is
    # a SecretStr: a repr or str of the settings shows "**********", never the value.
    remote_inference_token: SecretStr | None = None
    remote_inference_token_file: Path | None = None
    remote_inference_ca_file: Path | None = None
    models_dir: Path = Path("/app/models")
    allow_unsafe_loading: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
