"""Wire shapes of the serving API: the one place both the server (for its OpenAPI
docs) and the client (to build and read bodies) take them from.

The server's hot routes do NOT validate requests with these models (pydantic costs
more than the prediction for a one-row request); they parse with orjson and the
hand-written checks in `serving_runtime.models.inference`, which produce the same 422
messages whatever the caller. These classes document the shapes and type the client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from serving_runtime.models.folder_format import (
    MAX_MODEL_NAME_LENGTH,
    MODEL_NAME_PATTERN,
    MODEL_NAME_RULE,
)

# The documented request rules (checked by hand in serving_runtime.models.inference/features, the
# same bounds): model names follow the model-folder format's rule; correlation ids follow
# the X-Correlation-ID rule; feature values are finite numbers within float32 range.
FLOAT32_MAX = 3.4028234663852886e38
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
V2_ID_MAX_LENGTH = 256
V2_MAX_DIMS = 8

FeatureValue = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
CorrelationId = Annotated[str, Field(pattern=CORRELATION_ID_PATTERN)]

# --- native API (DESIGN.md) -------------------------------------------------------------


class PredictRequest(BaseModel):
    """`POST /predict`: features are columns, each name maps to one value per row."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model_name": "iris",
                    "features": {"sepal_length": [5.1, 6.2], "sepal_width": [3.5, 2.9]},
                    "correlation_id": "order-42",
                }
            ]
        },
    )

    model_name: str = Field(description=f"Model (folder) name: {MODEL_NAME_RULE}",
                            min_length=1, max_length=MAX_MODEL_NAME_LENGTH,
                            pattern=MODEL_NAME_PATTERN)
    features: dict[str, Annotated[list[FeatureValue], Field(min_length=1)]] = Field(
        min_length=1,
        description="Column per feature name; every column has the same number of rows. "
        "Values: finite numbers of magnitude at most 3.4028234663852886e38 (the models "
        "compute in float32)",
    )
    correlation_id: CorrelationId | None = Field(
        default=None, description="Echoed back and as X-Correlation-ID; generated when "
        "absent. 1 to 128 characters from A-Z a-z 0-9 . _ : - (else 422)"
    )


class PredictResponse(BaseModel):
    """Classifiers fill confidence (top probability) and probabilities keyed
    `class_<label>`; regressors and classifiers without predict_proba return null."""

    prediction: list[Any]
    confidence: list[float] | None
    probabilities: dict[str, list[float]] | None
    correlation_id: str
    model_version: str
    latency_ms: float


class PredictResult(TypedDict):
    """The plain-dict view of `PredictResponse` (same keys, same types): what
    `predict_from_body` returns and the client hands back, typed without building a
    pydantic object per answer. Change the two together."""

    prediction: list[Any]
    confidence: list[float] | None
    probabilities: dict[str, list[float]] | None
    correlation_id: str
    model_version: str
    latency_ms: float


class OutputExplanation(BaseModel):
    """One explained output: `base_value + sum(contributions[f][row] for f)` is the
    model's output for that row (in the space `ExplainResponse.output` names)."""

    base_value: float
    contributions: dict[str, list[float]]  # feature name -> one value per row


class ExplainResponse(BaseModel):
    """`POST /explain` (the /predict body): exact TreeSHAP per row and feature.
    `explanations` is keyed `value` for a model with one output (a regressor), else by
    the class key (`class_<label>`) each output belongs to: every class for a forest
    or a multi-class boosted model, the positive class for a binary boosted one.
    `output`: what the contributions add up to: `probability` (forest classifiers),
    `value` (forest and tree regressors) or `margin` (boosted models: log-odds of the
    positive class, the softmax inputs of each class, a regressor's raw score)."""

    output: Literal["probability", "value", "margin"]
    explanations: dict[str, OutputExplanation]
    correlation_id: str
    model_version: str
    latency_ms: float


class OutputExplanationResult(TypedDict):
    base_value: float
    contributions: dict[str, list[float]]


class ExplainResult(TypedDict):
    """The plain-dict view of `ExplainResponse`. Change the two together."""

    output: str
    explanations: dict[str, OutputExplanationResult]
    correlation_id: str
    model_version: str
    latency_ms: float


class BatchRequest(BaseModel):
    """`POST /predict/batch`: answered with a list of PredictResponse, in order.

    Consecutive requests for the same model are evaluated together, up to
    `batch_size` requests per model call; results are the same as one by one.
    """

    model_config = ConfigDict(extra="forbid")

    requests: list[PredictRequest] = Field(min_length=1)
    batch_size: int | None = Field(default=None, ge=1)


#: request header pinning the version that answers (a model with a canary or a shadow)
MODEL_VERSION_HEADER = "X-Model-Version"


class ChallengerStatus(BaseModel):
    """A model's challenger (docs/rollouts.md), as /health reports it."""

    mode: Literal["canary", "shadow"]
    version: str | None = Field(description="Its version (null when it failed to load)")
    state: Literal["loading", "serving", "failed", "rolled_back"]
    weight: float | None = Field(description="Canary: percent of requests it answers")
    reason: str | None = Field(description="Why it failed or was rolled back")
    requests: int = Field(description="Its answers counted toward the limits (this process)")
    errors: int = Field(description="Of those, requests it failed (the champion answered)")
    p95_ms: float | None = Field(description="p95 latency of its latest answers")


class ModelStatus(BaseModel):
    """One model's state as /health reports it."""

    name: str
    state: Literal["loading", "ready", "failed"]
    version: str | None = Field(description="Version being served (null if none)")
    error: str | None = Field(default=None, description="Last load/reload failure")
    challenger: ChallengerStatus | None = Field(
        default=None, description="The model's canary or shadow, when it has one")


class IgnoredFolder(BaseModel):
    """A folder of MODELS_DIR that is not served, and why."""

    name: str
    reason: str


class HealthResponse(BaseModel):
    """`GET /health`: `healthy` only when every expected model serves and the last
    (re)load of each succeeded; otherwise `degraded` with the reasons."""

    status: Literal["healthy", "degraded"]
    ready: bool
    models_loaded: list[str]
    models: list[ModelStatus]
    reasons: list[str]
    ignored: list[IgnoredFolder] = Field(
        default_factory=list,
        description="Folders of MODELS_DIR not served because of their name or a missing "
        "metadata.json (server only; hidden entries and lost+found are skipped silently)")


def health_document(ready: bool, models_loaded: Iterable[str], models: list[dict[str, Any]],
                    reasons: list[str]) -> dict[str, Any]:
    """The `/health` body (HealthResponse's shape) as a plain dict, built in one place for
    the server's registry and the client's local mode."""
    return {
        "status": "healthy" if ready and not reasons else "degraded",
        "ready": ready,
        "models_loaded": sorted(models_loaded),
        "models": models,
        "reasons": reasons,
    }


class ReloadResponse(BaseModel):
    """`POST /reload/{model_name}` (202)."""

    message: str


class ErrorResponse(BaseModel):
    """Error body of the native API (4xx/5xx): the message names the problem; the
    correlation id is also the X-Correlation-ID header."""

    detail: str
    correlation_id: str


# --- Open Inference Protocol v2 ---------------------------------------------------------

V2Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]


# What a tree model takes (BYTES, text, is refused with a 422 naming the input).
V2InputDatatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64",
]


class V2RequestInput(BaseModel):
    """A tensor: `data` flat (row-major) or nested exactly as `shape`, with
    product(shape) values, each valid for `datatype` (integers within the type's range,
    BOOL true/false, FP16/FP32 within range; BYTES is refused by the tree models), and
    within float32 range whatever the datatype."""

    name: str = Field(min_length=1)
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=V2_MAX_DIMS)
    datatype: V2InputDatatype
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2RequestOutput(BaseModel):
    name: str = Field(description="`predict` or (classifiers) `predict_proba`")
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(BaseModel):
    """Tabular models take either ONE input of shape [rows, n_features] in the model's
    feature order, or one input per feature (shape [rows] or [rows, 1]) named by the
    feature's name. Outputs: `predict` (default) and `predict_proba` (classifiers)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "req-1",
                    "inputs": [
                        {"name": "input-0", "shape": [1, 2], "datatype": "FP64",
                         "data": [5.1, 3.5]}
                    ],
                    "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
                }
            ]
        }
    )

    id: str | None = Field(
        default=None, max_length=V2_ID_MAX_LENGTH,
        description="Echoed in the answer's `id`; also as X-Correlation-ID when it follows "
        "the correlation id rule")
    parameters: dict[str, Any] | None = None
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: V2Datatype
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Any] | None = None
    outputs: list[V2ResponseOutput]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: V2Datatype
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] | None = None


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    """`GET /v2/health/live`."""

    live: bool


class V2Ready(BaseModel):
    """`GET /v2/health/ready` (200 ready, 503 not)."""

    ready: bool


class V2ModelReady(BaseModel):
    """`GET /v2/models/{name}[/versions/{version}]/ready` (200 ready, 503 loading or
    draining)."""

    name: str
    ready: bool


class V2Error(BaseModel):
    """Error body of the /v2 routes (the protocol's shape)."""

    error: str
