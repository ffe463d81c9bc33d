"""N1V1 serving runtime: model folders, loaders, inference and the HTTP server.

Public Python API (see docs/contracts.md, "Runtime Python API"):
    save_model(estimator, folder, *, version, feature_names=None, sample=None) -> Path
    load_model(folder, *, allow_unsafe=False) -> LoadedModel
    predict_from_body(model, body, *, correlation_id=None) -> dict
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from serving_runtime.errors import (
    BadRequestError,
    IntegrityError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ServingError,
    UnsafeArtifactError,
)

# The model library (numpy, the frameworks) is imported on first use: `python -m
# serving_runtime.tools.fetch`, the init container, runs this file and needs none of it.
_LAZY = {
    "LoadedModel": "serving_runtime.models.folder",
    "is_valid_model_name": "serving_runtime.models.folder_format",
    "load_model": "serving_runtime.models.folder",
    "save_model": "serving_runtime.models.folder",
    "infer_v2": "serving_runtime.models.inference",
    "model_name_of": "serving_runtime.models.inference",
    "parse_json": "serving_runtime.models.inference",
    "predict_batch_from_body": "serving_runtime.models.inference",
    "predict_from_body": "serving_runtime.models.inference",
}

if TYPE_CHECKING:
    from serving_runtime.models.folder import LoadedModel, load_model, save_model
    from serving_runtime.models.folder_format import is_valid_model_name
    from serving_runtime.models.inference import (
        infer_v2,
        model_name_of,
        parse_json,
        predict_batch_from_body,
        predict_from_body,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'serving_runtime' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # once
    return value


__version__ = "0.1.0"

__all__ = [
    "BadRequestError",
    "IntegrityError",
    "InvalidInputError",
    "LoadedModel",
    "ModelLoadError",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "ServingError",
    "UnsafeArtifactError",
    "__version__",
    "infer_v2",
    "is_valid_model_name",
    "load_model",
    "model_name_of",
    "parse_json",
    "predict_batch_from_body",
    "predict_from_body",
    "save_model",
]
