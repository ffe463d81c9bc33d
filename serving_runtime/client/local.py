"""Local mode: the runtime's loader and inference code, in the caller's process.

Requests go through the same steps as on the server: JSON bytes (`wire.encode`), the
server's `parse_json`, `model_name_of`, `predict_from_body` / `predict_batch_from_body`.
Models are loaded from MODELS_DIR on first use (or up front with `preload`) with the
same `load_model` checks (sha256, unsafe-artifact refusal, golden sample).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from serving_runtime.errors import ModelNotFoundError, ServingError
from serving_runtime.models.folder import LoadedModel, load_model
from serving_runtime.models.folder_format import METADATA_FILE, is_valid_model_name
from serving_runtime.models.inference import (
    accepted_correlation_id,
    model_name_of,
    parse_json,
    predict_batch_from_body,
    predict_from_body,
    prepare_predict,
    run_explain,
)
from serving_runtime.schemas import health_document

from .errors import PayloadTooLargeError, ServiceUnavailableError

log = logging.getLogger("serving_runtime.client")


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


class LocalModels:
    """Loaded models by name. Lookups are lock-free (a dict read); loads and reloads take
    a lock and swap the dict entry in one assignment, so a request sees one version."""

    def __init__(
        self,
        models_dir: Path,
        *,
        allow_unsafe: bool = False,
        threads: int | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.allow_unsafe = allow_unsafe
        self.threads = threads
        self.max_body_bytes = max_body_bytes
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._attempted: list[str] = []
        self._lock = threading.Lock()

    # --- models ----------------------------------------------------------------------

    def has_folder(self, name: str) -> bool:
        return is_valid_model_name(name) and (self.models_dir / name / METADATA_FILE).is_file()

    def _load(self, name: str) -> LoadedModel:
        if name not in self._attempted:
            self._attempted.append(name)
        return load_model(self.models_dir / name, allow_unsafe=self.allow_unsafe,
                          threads=self.threads)

    def loaded(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def get(self, name: str) -> LoadedModel:
        """The model, loading it on first use. Unknown -> ModelNotFoundError (as the
        server's 404); a folder that does not load -> ServiceUnavailableError."""
        model = self._models.get(name)
        if model is not None:
            return model
        if not self.has_folder(name):
            raise ModelNotFoundError(name)
        with self._lock:
            model = self._models.get(name)
            if model is not None:  # another thread loaded it while we waited
                return model
            try:
                model = self._load(name)
            except Exception as exc:
                self._errors[name] = _message(exc)
                raise ServiceUnavailableError(
                    f"Model {name} failed to load: {_message(exc)}"
                ) from exc
            self._models[name] = model
            self._errors.pop(name, None)
            return model

    def preload(self, names: Iterable[str]) -> None:
        for name in names:
            self.get(name)

    def reload(self, name: str) -> dict[str, str]:
        """Load the folder again beside the served version and swap on success. Like the
        server, a failure keeps the old version and shows in `health()`; the answer is the
        server's 202 body either way."""
        if not self.has_folder(name):
            raise ModelNotFoundError(name)
        with self._lock:
            try:
                model = self._load(name)
            except Exception as exc:
                self._errors[name] = _message(exc)
                log.error("model reload failed", extra={"model_name": name,
                                                        "error": _message(exc)})
            else:
                self._models[name] = model
                self._errors.pop(name, None)
        return {"message": f"Reloading model {name}"}

    def health(self) -> dict[str, Any]:
        """The shape of the server's /health (`schemas.HealthResponse`)."""
        reasons: list[str] = []
        models = []
        for name in self._attempted:
            served = self._models.get(name)
            error = self._errors.get(name)
            if error and served is not None:
                reasons.append(f"model {name}: reload failed ({error}); still serving "
                               f"version {served.version}")
            elif error:
                reasons.append(f"model {name}: load failed ({error})")
            models.append({"name": name, "state": "ready" if served else "failed",
                           "version": served.version if served else None, "error": error})
        if not self._attempted:
            reasons.append("no model loaded yet (local mode loads a model on first use)")
        ready = bool(self._attempted) and all(n in self._models for n in self._attempted)
        return health_document(ready, self._models, models, reasons)

    # --- requests (the server's code path) -------------------------------------------

    def _parse(self, raw: bytes) -> Any:
        if len(raw) > self.max_body_bytes:
            # The server's words for the same body (serving_runtime.server.http_body).
            raise PayloadTooLargeError(
                f"request body of {len(raw)} bytes exceeds the limit of "
                f"{self.max_body_bytes} bytes (MAX_BODY_BYTES)"
            )
        return parse_json(raw)

    def predict(self, raw: bytes, correlation_id: str | None) -> dict[str, Any]:
        try:
            body = self._parse(raw)
            model = self.get(model_name_of(body))
            return predict_from_body(model, body, correlation_id=correlation_id)
        except ServingError as exc:
            exc.correlation_id = correlation_id  # type: ignore[attr-defined]  # as remote
            raise

    def explain(self, raw: bytes, correlation_id: str | None) -> dict[str, Any]:
        try:
            body = self._parse(raw)
            model = self.get(model_name_of(body))
            return run_explain(prepare_predict(
                model, body, correlation_id=accepted_correlation_id(correlation_id)))
        except ServingError as exc:
            exc.correlation_id = correlation_id  # type: ignore[attr-defined]
            raise

    def predict_batch(self, raw: bytes, correlation_id: str | None) -> list[dict[str, Any]]:
        try:
            return predict_batch_from_body(self.get, self._parse(raw),
                                           correlation_id=correlation_id)
        except ServingError as exc:
            exc.correlation_id = correlation_id  # type: ignore[attr-defined]
            raise
