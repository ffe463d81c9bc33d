"""Reading joblib/pickle artifacts: only ever reached after the caller checked that
unsafe loading is allowed (metadata `allow_unsafe` or ALLOW_UNSAFE_LOADING)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving_runtime.errors import ModelLoadError, UnsafeArtifactError

PICKLE_EXTENSIONS = (".joblib", ".pkl", ".pickle")

UNSAFE_HOWTO = (
    "unpickling can run arbitrary code, so it is refused by default; to allow it set "
    "ALLOW_UNSAFE_LOADING=true (flag --allow-unsafe-loading) or \"allow_unsafe\": true in "
    "the model's metadata.json, or better convert the model with `python -m serving_runtime "
    "save --from FILE --trust-pickle --dest DIR/NAME --version V` to a safe format"
)


def load_pickle(artifact: Path, *, allow_unsafe: bool) -> Any:
    if not allow_unsafe:
        raise UnsafeArtifactError(f"{artifact.name} is a pickle/joblib artifact: {UNSAFE_HOWTO}")
    import joblib  # joblib reads plain pickles too

    try:
        return joblib.load(artifact)
    except Exception as exc:  # a corrupt file is a load failure, not a crash
        raise ModelLoadError(f"could not unpickle {artifact.name}: {exc}") from exc
