"""The HTTP server: `create_app(settings)` builds the FastAPI application.

Hot routes (/predict, /predict/batch, /v2/models/{name}/infer) are thin wrappers around
`hot_handlers.HotHandlers`, which parses with orjson and validates by hand
(serving_runtime.inference): no pydantic on the request path, no per-request log line, no
middleware. Their pydantic schemas are attached for the OpenAPI docs only. In the server
(`python -m serving_runtime`) the hot-path ASGI layer calls the same handlers directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Path
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from serving_runtime import __version__, schemas
from serving_runtime.errors import ModelNotFoundError, ServingError, echo, encodable
from serving_runtime.heap import tune_collector
from serving_runtime.hot_handlers import HotHandlers, Reply
from serving_runtime.http_body import json_response, read_asgi_body
from serving_runtime.inference import (
    CORRELATION_ID_RULE,
    accepted_correlation_id,
    model_metadata_v2,
    new_correlation_id,
)
from serving_runtime.lifecycle import DRAINING_REASON, LIFECYCLE, Lifecycle, fail_startup
from serving_runtime.logs import configure_logging
from serving_runtime.metrics import RuntimeMetrics
from serving_runtime.registry import ModelRegistry
from serving_runtime.reload_broadcast import ReloadBroadcast
from serving_runtime.settings import Settings

log = logging.getLogger("serving_runtime.app")

#: where CorrelationIdMiddleware leaves the request's (accepted or generated) id
CORRELATION_SCOPE_KEY = "n1v1.correlation_id"
_CID_HEADER = b"x-correlation-id"
_MODEL_NAME_DOC = "Model (folder) name, a DNS-1123 label"
NameParam = Annotated[str, Path(description=_MODEL_NAME_DOC)]
VersionParam = Annotated[str, Path(description="Model version (404 unless it is the one "
                                               "being served)")]
_CID_HEADER_DOC = {
    "description": f"The request's X-Correlation-ID when it follows the rule "
    f"({CORRELATION_ID_RULE}), else a generated id (a rejected one is never echoed)",
    "required": True,
    "schema": {"type": "string", "pattern": schemas.CORRELATION_ID_PATTERN},
}


class CorrelationIdMiddleware:
    """Adds X-Correlation-ID to every answer of the FastAPI routes that has none (health,
    metrics, metadata, 404/405...): the request's when it follows the correlation id rule,
    else a fresh one. Pure ASGI, one header scan per request; the hot routes never pass
    here (serving_runtime.fastpath.asgi) and set their own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any,
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = None
        for key, value in scope["headers"]:
            if key == _CID_HEADER:  # the first one, as Starlette's headers.get
                cid = accepted_correlation_id(value.decode("latin-1"))
                break
        cid = cid or new_correlation_id()
        scope[CORRELATION_SCOPE_KEY] = cid
        raw = cid.encode("ascii")

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                if not any(k.lower() == _CID_HEADER for k, _ in headers):
                    headers.append((_CID_HEADER, raw))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def error_response(request: Request, status: int, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    """An error in the documented shape of the route's family: `{"error"}` under /v2,
    `{"detail", "correlation_id"}` elsewhere; X-Correlation-ID set either way."""
    cid = request.scope.get(CORRELATION_SCOPE_KEY) or new_correlation_id()
    path = request.url.path
    doc = ({"error": message} if path == "/v2" or path.startswith("/v2/")
           else {"detail": message, "correlation_id": cid})
    response = json_response(doc, status, cid)
    if headers:
        response.headers.update(headers)  # Allow, on a 405
    return response


def _error_doc(model: type, description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


def _document_every_response(doc: dict[str, Any]) -> None:
    """Every documented answer carries X-Correlation-ID; FastAPI's automatic 422 for path
    parameters is dropped where it cannot happen (they are plain strings)."""
    for item in doc.get("paths", {}).values():
        for op in item.values():
            responses = op.get("responses", {})
            auto = responses.get("422", {}).get("content", {}).get("application/json", {})
            if auto.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            for response in responses.values():
                response.setdefault("headers", {})["X-Correlation-ID"] = _CID_HEADER_DOC
    comps = doc.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in str(doc.get("paths")):
        comps.pop("HTTPValidationError", None)
        comps.pop("ValidationError", None)


def _schema_ref(model: type) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _request_body_doc(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": _schema_ref(model)}}}}


def create_app(settings: Settings | None = None,
               lifecycle: Lifecycle | None = None) -> FastAPI:
    """Build the runtime app. Models load in the background after start-up, so liveness
    answers at once and readiness turns 200 when every expected model serves. `lifecycle`
    (default: this process's) says when the server drains (readiness 503) and receives
    the exit request of EXIT_ON_LOAD_FAILURE (serving_runtime/lifecycle.py)."""
    settings = settings or Settings()
    lifecycle = lifecycle or LIFECYCLE
    configure_logging(settings.log_level)
    metrics = RuntimeMetrics()
    registry = ModelRegistry(settings, metrics)
    broadcast = ReloadBroadcast.from_env()
    background: set[asyncio.Task[Any]] = set()
    limiter_box: list[anyio.CapacityLimiter] = []
    max_body = settings.max_body_bytes

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    async def load_models() -> None:
        await registry.load_expected()
        # Only start-up counts: a failed hot reload keeps the old version serving.
        if settings.exit_on_load_failure:
            problems = registry.startup_failures()
            if problems:
                fail_startup("; ".join(problems), settings.termination_message_path,
                             lifecycle)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tune_collector()  # serving_runtime/heap.py: fewer collections inside a body parse
        limiter_box.append(anyio.CapacityLimiter(settings.inference_threads))
        log.info("runtime starting", extra={
            "models_dir": str(settings.models_dir), "pid": os.getpid(),
            "inference_threads": settings.inference_threads,
            "allow_unsafe_loading": settings.allow_unsafe_loading})
        if broadcast is None:
            spawn(load_models())  # liveness answers while models load
        else:
            # Several workers share one socket: a worker that has not finished start-up
            # takes no connections, so loading first keeps a half-loaded worker from
            # answering 503 while another one already reports ready.
            await load_models()
            spawn(broadcast.watch(registry.reload))
        yield
        for task in list(background):
            task.cancel()

    app = FastAPI(
        title="N1V1 model serving runtime",
        version=__version__,
        description="Predictions from scikit-learn and XGBoost models: the native API "
        "(/predict, /predict/batch) and the Open Inference Protocol v2 (/v2/...).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle  # the hot-path layer adds Connection: close on a drain

    async def offload(fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter_box[0])

    hot = HotHandlers(registry, metrics, offload)
    app.state.hot = hot  # the hot-path ASGI layer calls the same handlers

    def body_reader(request: Request) -> Any:
        return lambda: read_asgi_body(request.receive, request.headers.get("content-length"),
                                      max_body)

    def respond(reply: Reply) -> Response:
        return json_response(reply.content, reply.status, reply.correlation_id)

    # Every answer of these routes carries X-Correlation-ID (the request's when it follows
    # the rule, else a fresh one); the hot handlers set theirs, this covers the rest.
    app.add_middleware(CorrelationIdMiddleware)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Unknown routes (404) and methods (405) in the documented error shapes."""
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if exc.status_code == 404:
            message = (f"no route {request.method} {echo(path)} (the API is described at "
                       f"/openapi.json)")
        elif exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} is not allowed on {echo(path)}; allowed: {allow}"
        else:
            message = encodable(str(exc.detail))
        return error_response(request, exc.status_code, message, exc.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        # FastAPI validates nothing here that can fail (path parameters are plain
        # strings); kept so that such an error would still have the documented shape
        assert isinstance(exc, RequestValidationError)
        parts = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
                          for e in exc.errors())
        return error_response(request, 422, encodable(parts or "invalid request"))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)

    # --- native API --------------------------------------------------------------------

    async def predict(request: Request) -> Response:
        return respond(await hot.predict(body_reader(request),
                                         request.headers.get("x-correlation-id")))

    native_errors = {
        400: _error_doc(schemas.ErrorResponse, "malformed JSON body (or lone UTF-16 "
                        "surrogates in a string)"),
        404: _error_doc(schemas.ErrorResponse, "unknown model: `Model X not found`"),
        413: _error_doc(schemas.ErrorResponse, "body over MAX_BODY_BYTES"),
        422: _error_doc(schemas.ErrorResponse, "the body parses but is wrong; the message "
                        "names the fields/features (and the request index in a batch)"),
        503: _error_doc(schemas.ErrorResponse, "model still loading, or the server sheds "
                        "load (Retry-After): retry"),
    }
    app.add_api_route(
        "/predict", predict, methods=["POST"], response_model=schemas.PredictResponse,
        summary="Predict with one model",
        description="Features are columns: each feature name maps to one value per row. "
        "422 names missing/unknown/non-numeric/NaN/inf/beyond-float32/empty/ragged features "
        "and invalid correlation ids; 404 for an unknown model; 413 for a body over "
        "MAX_BODY_BYTES; 400 for malformed JSON.",
        responses=native_errors,
        openapi_extra=_request_body_doc(schemas.PredictRequest),
    )

    async def predict_batch(request: Request) -> Response:
        return respond(await hot.predict_batch(body_reader(request),
                                               request.headers.get("x-correlation-id")))

    app.add_api_route(
        "/predict/batch", predict_batch, methods=["POST"],
        response_model=list[schemas.PredictResponse], summary="Predict many requests",
        description="Answers a list of predict responses in request order. An invalid "
        "request fails the whole batch with a message naming its index (`requests[3]: ...`).",
        responses=native_errors,
        openapi_extra=_request_body_doc(schemas.BatchRequest),
    )

    @app.get("/health", response_model=schemas.HealthResponse, summary="Health, JSON view",
             responses={503: {"model": schemas.HealthResponse,
                              "description": "not ready (loading, failed, draining)"}})
    async def health() -> Response:
        """`healthy` only when every expected model serves and its last (re)load worked.
        HTTP 200 when ready (every expected model serves), else 503 — also while the
        process drains after SIGTERM."""
        doc = registry.health()
        if lifecycle.draining:
            doc.update(status="degraded", ready=False)
            doc["reasons"].insert(0, DRAINING_REASON)
        return json_response(doc, 200 if doc["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format"}})
    async def metrics_endpoint() -> Response:
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    @app.post("/reload/{model_name}", status_code=202, response_model=schemas.ReloadResponse,
              summary="Hot-reload a model from its folder",
              responses={404: _error_doc(schemas.ErrorResponse, "no such model folder")})
    async def reload(model_name: Annotated[str, Path(description=_MODEL_NAME_DOC)],
                     request: Request) -> Response:
        """Loads the folder's current artifact beside the serving version, checks it (the
        golden sample.json when present) and swaps it in; on failure the old version keeps
        serving and /health, /metrics and the logs say why."""
        cid = request.scope.get(CORRELATION_SCOPE_KEY) or new_correlation_id()
        # A served model whose folder vanished still gets a reload attempt: it fails,
        # the old version keeps serving, and /health says why (a 404 would be a lie).
        if model_name not in registry.models and not registry.has_folder(model_name):
            return respond(hot.native_error(ModelNotFoundError(model_name), cid))
        if broadcast is not None:
            broadcast.announce(model_name)  # every worker process reloads
        else:
            spawn(registry.reload(model_name))
        return json_response({"message": f"Reloading model {model_name}"}, 202, cid)

    # --- Open Inference Protocol v2 -----------------------------------------------------

    def v2_error(request: Request, exc: ServingError) -> Response:
        cid = request.scope.get(CORRELATION_SCOPE_KEY) or new_correlation_id()
        return respond(hot.v2_error(exc, cid))

    @app.get("/v2", response_model=schemas.V2ServerMetadata, tags=["v2"])
    async def v2_server_metadata() -> Response:
        return json_response({"name": "n1v1-ml-serving", "version": __version__,
                              "extensions": []})

    @app.get("/v2/health/live", tags=["v2"], response_model=schemas.V2Live,
             summary="Liveness: the process serves HTTP")
    async def v2_live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready", tags=["v2"], response_model=schemas.V2Ready,
             summary="Readiness: every expected model serves (503 otherwise)",
             responses={503: {"model": schemas.V2Ready, "description": "not ready"}})
    async def v2_ready() -> Response:
        ready = registry.ready() and not lifecycle.draining  # a drain leaves the Service
        return json_response({"ready": ready}, 200 if ready else 503)

    # The versioned routes take the version from the path only: the unversioned ones have
    # no `version` parameter at all (FastAPI would otherwise read `?version=`, which the
    # hot-path layer does not).
    def model_metadata(request: Request, name: str, version: str | None) -> Response:
        try:
            return json_response(model_metadata_v2(hot.v2_model(name, version)))
        except ServingError as exc:
            return v2_error(request, exc)

    def model_ready(request: Request, name: str, version: str | None) -> Response:
        try:
            hot.v2_model(name, version)
        except ServingError as exc:
            if exc.status_code == 503:
                return json_response({"name": name, "ready": False}, 503)
            return v2_error(request, exc)
        if lifecycle.draining:
            return json_response({"name": name, "ready": False}, 503)
        return json_response({"name": name, "ready": True})

    async def infer(request: Request, name: str, version: str | None) -> Response:
        return respond(await hot.v2_infer(body_reader(request),
                                          request.headers.get("x-correlation-id"), name,
                                          version))

    async def v2_model_metadata(request: Request, name: NameParam) -> Response:
        return model_metadata(request, name, None)

    async def v2_model_metadata_version(request: Request, name: NameParam,
                                        version: VersionParam) -> Response:
        return model_metadata(request, name, version)

    async def v2_model_ready(request: Request, name: NameParam) -> Response:
        return model_ready(request, name, None)

    async def v2_model_ready_version(request: Request, name: NameParam,
                                     version: VersionParam) -> Response:
        return model_ready(request, name, version)

    async def v2_infer(request: Request, name: NameParam) -> Response:
        return await infer(request, name, None)

    async def v2_infer_version(request: Request, name: NameParam,
                               version: VersionParam) -> Response:
        return await infer(request, name, version)

    v2_not_found = _error_doc(schemas.V2Error, "unknown model (or version)")
    v2_loading = _error_doc(schemas.V2Error, "model still loading: retry")
    v2_infer_errors = {
        400: _error_doc(schemas.V2Error, "malformed JSON body (or lone UTF-16 surrogates)"),
        404: v2_not_found,
        413: _error_doc(schemas.V2Error, "body over MAX_BODY_BYTES"),
        422: _error_doc(schemas.V2Error, "the message names the input, datatype or shape "
                        "problem"),
        503: _error_doc(schemas.V2Error, "model still loading, or the server sheds load "
                        "(Retry-After): retry"),
    }
    ready_errors = {404: v2_not_found,
                    503: {"model": schemas.V2ModelReady,
                          "description": "model loading, or the server drains"}}
    for prefix, meta, ready, inf in (
        ("/v2/models/{name}", v2_model_metadata, v2_model_ready, v2_infer),
        ("/v2/models/{name}/versions/{version}", v2_model_metadata_version,
         v2_model_ready_version, v2_infer_version),
    ):
        app.add_api_route(prefix, meta, methods=["GET"], tags=["v2"],
                          response_model=schemas.V2ModelMetadata,
                          responses={404: v2_not_found, 503: v2_loading})
        app.add_api_route(prefix + "/ready", ready, methods=["GET"], tags=["v2"],
                          response_model=schemas.V2ModelReady, responses=ready_errors)
        app.add_api_route(
            prefix + "/infer", inf, methods=["POST"], tags=["v2"],
            response_model=schemas.V2InferenceResponse, responses=v2_infer_errors,
            openapi_extra=_request_body_doc(schemas.V2InferenceRequest),
        )

    def openapi() -> dict[str, Any]:
        # The hot routes reference request schemas that no route validates with; add them.
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            comps = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in (schemas.PredictRequest, schemas.BatchRequest,
                          schemas.V2InferenceRequest):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                comps.update(js.pop("$defs", {}))
                comps[model.__name__] = js
            _document_every_response(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app_from_env() -> Any:
    """uvicorn factory (`--factory`): settings from the environment only; the hot routes
    skip FastAPI's router (serving_runtime.fastpath.asgi)."""
    from serving_runtime.fastpath.asgi import with_hot_path

    return with_hot_path(create_app(Settings()))

