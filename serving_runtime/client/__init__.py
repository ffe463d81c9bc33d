"""The trading engine's inference client: one interface, local or remote.

    from serving_runtime.client import InferenceClient, InvalidInputError

    client = InferenceClient()          # REMOTE_INFERENCE_ENABLED decides the mode
    result = client.predict("iris", {"sepal_length": [5.1], "sepal_width": [3.5],
                                     "petal_length": [1.4], "petal_width": [0.2]})
    result["prediction"], result["probabilities"]

Local mode loads model folders from MODELS_DIR in-process with the runtime's own loader
and inference code; remote mode calls a runtime over HTTP. Both give the same results and
raise the same exceptions for the same input.
"""

from serving_runtime.schemas import PredictResult

from .core import AsyncInferenceClient, InferenceClient
from .errors import (
    AuthenticationError,
    BadRequestError,
    InferenceError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    PayloadTooLargeError,
    PredictionError,
    ServerError,
    ServiceUnavailableError,
    TLSVerificationError,
)
from .retry import RetryPolicy
from .settings import ClientSettings

__all__ = [
    "AsyncInferenceClient",
    "AuthenticationError",
    "BadRequestError",
    "ClientSettings",
    "InferenceClient",
    "InferenceError",
    "InferenceTimeoutError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "PayloadTooLargeError",
    "PredictResult",
    "PredictionError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "TLSVerificationError",
]
