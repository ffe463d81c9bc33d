"""Every HTTP route of the runtime, once: path, method, handler, and its documentation.

Two readers: `app.py` registers each route with FastAPI (which serves the docs, the
TestClient and every non-hot request), and the hot-path layer (`hot_path.py`) matches
the `hot` routes itself and calls the same handler without FastAPI's router. A route
added here is served and documented by both; nothing else spells a path.

`handler` names a method: of `handlers.HotHandlers` for hot routes, of
`control.ControlHandlers` for the others. Path parameters are passed by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from serving_runtime import schemas
from serving_runtime.models.folder_format import MODEL_NAME_RULE

MODEL_NAME_DOC = f"Model (folder) name: {MODEL_NAME_RULE}"
VERSION_DOC = "Model version (404 unless it is the one being served)"
PARAM_DOCS = {"name": MODEL_NAME_DOC, "model_name": MODEL_NAME_DOC, "version": VERSION_DOC}


def _error(model: type, description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


_NATIVE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error(schemas.ErrorResponse, "malformed JSON body (or lone UTF-16 surrogates in a "
                "string)"),
    404: _error(schemas.ErrorResponse, "unknown model: `Model X not found`"),
    413: _error(schemas.ErrorResponse, "body over MAX_BODY_BYTES"),
    422: _error(schemas.ErrorResponse, "the body parses but is wrong; the message names the "
                "fields/features (and the request index in a batch)"),
    503: _error(schemas.ErrorResponse, "model still loading, or the server sheds load "
                "(Retry-After): retry"),
}
_V2_NOT_FOUND = _error(schemas.V2Error, "unknown model (or version)")
_V2_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error(schemas.V2Error, "malformed JSON body (or lone UTF-16 surrogates)"),
    404: _V2_NOT_FOUND,
    413: _error(schemas.V2Error, "body over MAX_BODY_BYTES"),
    422: _error(schemas.V2Error, "the message names the input, datatype or shape problem"),
    503: _error(schemas.V2Error, "model still loading, or the server sheds load "
                "(Retry-After): retry"),
}
_V2_METADATA_ERRORS: dict[int | str, dict[str, Any]] = {404: _V2_NOT_FOUND,
                       503: _error(schemas.V2Error, "model still loading: retry")}
_V2_READY_ERRORS: dict[int | str, dict[str, Any]] = {404: _V2_NOT_FOUND,
                    503: {"model": schemas.V2ModelReady,
                          "description": "model loading, or the server drains"}}


@dataclass(frozen=True)
class Route:
    path: str  # FastAPI template: `{param}` is one non-empty path segment
    method: str
    handler: str
    response_model: Any = None
    summary: str | None = None
    description: str | None = None
    request_model: type[BaseModel] | None = None  # documented; handlers validate by hand
    responses: dict[int | str, dict[str, Any]] = field(default_factory=dict)
    status_code: int = 200
    tags: tuple[str, ...] = ()
    text_response: bool = False  # /metrics: Prometheus text, not JSON
    hot: bool = False  # served by the hot-path layer, without FastAPI's router
    operation: str | None = None  # the endpoint's name (OpenAPI operationId); default handler

    @cached_property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    @cached_property
    def params(self) -> tuple[str, ...]:
        return tuple(seg[1:-1] for seg in self.segments if seg.startswith("{"))

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when `path` is this route, else None."""
        want = self.segments
        got = path.split("/")
        if len(got) != len(want):
            return None
        params: dict[str, str] = {}
        for w, g in zip(want, got, strict=True):
            if w.startswith("{"):
                if not g:
                    return None
                params[w[1:-1]] = g
            elif w != g:
                return None
        return params


def _v2_model_routes(prefix: str, suffix: str) -> tuple[Route, ...]:
    return (
        Route(prefix, "GET", f"v2_model_metadata{suffix}", schemas.V2ModelMetadata,
              tags=("v2",), responses=_V2_METADATA_ERRORS),
        Route(prefix + "/ready", "GET", f"v2_model_ready{suffix}", schemas.V2ModelReady,
              tags=("v2",), responses=_V2_READY_ERRORS),
        # one handler for both infer routes; the operation ids differ
        Route(prefix + "/infer", "POST", "v2_infer", schemas.V2InferenceResponse,
              tags=("v2",), responses=_V2_INFER_ERRORS,
              request_model=schemas.V2InferenceRequest, hot=True,
              operation=f"v2_infer{suffix}"),
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "/predict", "POST", "predict", schemas.PredictResponse,
        summary="Predict with one model",
        description="Features are columns: each feature name maps to one value per row. "
        "422 names missing/unknown/non-numeric/NaN/inf/beyond-float32/empty/ragged features "
        "and invalid correlation ids; 404 for an unknown model; 413 for a body over "
        "MAX_BODY_BYTES; 400 for malformed JSON.",
        request_model=schemas.PredictRequest, responses=_NATIVE_ERRORS, hot=True,
    ),
    Route(
        "/predict/batch", "POST", "predict_batch", list[schemas.PredictResponse],
        summary="Predict many requests",
        description="Answers a list of predict responses in request order. An invalid "
        "request fails the whole batch with a message naming its index (`requests[3]: ...`).",
        request_model=schemas.BatchRequest, responses=_NATIVE_ERRORS, hot=True,
    ),
    Route(
        "/explain", "POST", "explain", schemas.ExplainResponse,
        summary="Explain predictions: exact TreeSHAP per row and feature",
        description="The /predict body; answers each feature's contribution per row and "
        "the base value, per class where it applies, adding up to the model's raw output "
        "(`output`). Tree models only (scikit-learn trees, forests and gradient boosting; "
        "XGBoost; LightGBM): another model is a 422 naming it. The served version (or the "
        "X-Model-Version pin), never a canary split.",
        request_model=schemas.PredictRequest, responses=_NATIVE_ERRORS, hot=True,
    ),
    Route(
        "/health", "GET", "health", schemas.HealthResponse, summary="Health, JSON view",
        description="`healthy` only when every expected model serves and its last "
        "(re)load worked. HTTP 200 when ready (every expected model serves), else 503 — "
        "also while the process drains after SIGTERM.",
        responses={503: {"model": schemas.HealthResponse,
                         "description": "not ready (loading, failed, draining)"}},
    ),
    Route(
        "/metrics", "GET", "metrics", summary="Prometheus metrics", text_response=True,
        operation="metrics_endpoint",  # the operationId clients were generated with
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                         "description": "Prometheus text exposition format"}},
    ),
    Route(
        "/reload/{model_name}", "POST", "reload", schemas.ReloadResponse, status_code=202,
        summary="Hot-reload a model from its folder",
        description="Loads the folder's current artifact beside the serving version, "
        "checks it (the golden sample.json when present) and swaps it in; on failure the "
        "old version keeps serving and /health, /metrics and the logs say why.",
        responses={404: _error(schemas.ErrorResponse, "no such model folder")},
    ),
    Route("/v2", "GET", "v2_server_metadata", schemas.V2ServerMetadata, tags=("v2",)),
    Route("/v2/health/live", "GET", "v2_live", schemas.V2Live, tags=("v2",),
          summary="Liveness: the process serves HTTP"),
    Route("/v2/health/ready", "GET", "v2_ready", schemas.V2Ready, tags=("v2",),
          summary="Readiness: every expected model serves (503 otherwise)",
          responses={503: {"model": schemas.V2Ready, "description": "not ready"}}),
    # The versioned routes take the version from the path only; the unversioned ones
    # have no `version` parameter at all.
    *_v2_model_routes("/v2/models/{name}", ""),
    *_v2_model_routes("/v2/models/{name}/versions/{version}", "_version"),
)

HOT_ROUTES: tuple[Route, ...] = tuple(r for r in ROUTES if r.hot)
# The request schemas only the docs use (no route validates with them).
DOCUMENTED_REQUEST_MODELS: tuple[type[BaseModel], ...] = tuple(
    dict.fromkeys(r.request_model for r in ROUTES if r.request_model is not None))


_STATIC_HOT = {r.path: r for r in HOT_ROUTES if not r.params}
_TEMPLATED_HOT = tuple(r for r in HOT_ROUTES if r.params)
_NO_PARAMS: dict[str, str] = {}


def match_hot(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The hot route serving `method path` and its parameters, else None."""
    if method != "POST":  # every hot route is a POST
        return None
    route = _STATIC_HOT.get(path)  # /predict, /predict/batch: one dict lookup
    if route is not None:
        return route, _NO_PARAMS
    for route in _TEMPLATED_HOT:
        params = route.match(path)
        if params is not None:
            return route, params
    return None
