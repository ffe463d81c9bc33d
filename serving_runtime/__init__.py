"""N1V1 serving runtime: model folders, loaders, inference and the HTTP server.

Public Python API (see docs/contracts.md, "Runtime Python API"):
    save_model(estimator, folder, *, version, feature_names=None, sample=None) -> Path
    load_model(folder, *, allow_unsafe=False) -> LoadedModel
    predict_from_body(model, body, *, correlation_id=None) -> dict
"""

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
from serving_runtime.models.folder import LoadedModel, is_valid_model_name, load_model, save_model
from serving_runtime.models.inference import (
    infer_v2,
    model_name_of,
    parse_json,
    predict_batch_from_body,
    predict_from_body,
)

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
