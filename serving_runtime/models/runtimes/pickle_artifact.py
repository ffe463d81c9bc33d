"""Reading joblib/pickle artifacts: only ever reached after the caller checked that
unsafe loading is allowed (ALLOW_UNSAFE_LOADING; a folder cannot allow itself)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from serving_runtime.errors import ModelLoadError, UnsafeArtifactError
from serving_runtime.models.runtimes.native_errors import clean_native_error
from serving_runtime.models.runtimes.plugin import PICKLE_KINDS

PICKLE_EXTENSIONS = tuple(k.suffix for k in PICKLE_KINDS)


def is_pickle(suffix: str) -> bool:
    return suffix.lower() in PICKLE_EXTENSIONS

UNSAFE_HOWTO = (
    "unpickling can run arbitrary code, so it is refused by default; to allow it set "
    "ALLOW_UNSAFE_LOADING=true (flag --allow-unsafe-loading; spec.model.allowUnsafeLoading "
    "on an MLModel), or better convert the model with `python -m serving_runtime save --from "
    "FILE --trust-pickle --dest DIR/NAME --version V` to a safe format"
)


def load_pickle(artifact: Path, *, allow_unsafe: bool, data: bytes | None = None) -> Any:
    """Unpickle `artifact` (from `data`, its bytes, when given) - refused first unless
    unsafe loading is allowed."""
    if not allow_unsafe:
        raise UnsafeArtifactError(f"{artifact.name} is a pickle/joblib artifact: {UNSAFE_HOWTO}")
    import joblib  # joblib reads plain pickles too

    try:
        return joblib.load(io.BytesIO(data) if data is not None else artifact)
    except Exception as exc:  # a corrupt file is a load failure, not a crash
        raise ModelLoadError(
            f"could not unpickle {artifact.name}: {clean_native_error(str(exc))}") from exc
