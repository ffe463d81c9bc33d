"""Client settings from the environment; constructor arguments override them."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """`REMOTE_INFERENCE_*` choose the mode; `MODELS_DIR`, `ALLOW_UNSAFE_LOADING` and
    `MAX_BODY_BYTES` are the runtime's own settings, reused so that local mode loads and
    refuses exactly what a server would."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    remote_inference_enabled: bool = False
    remote_inference_url: str = "http://localhost:8000"
    remote_inference_timeout: float = 30.0
    models_dir: Path = Path("/app/models")
    allow_unsafe_loading: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
