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
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import Response

from serving_runtime import __version__, schemas
from serving_runtime.errors import ModelNotFoundError, ServingError
from serving_runtime.heap import tune_collector
from serving_runtime.hot_handlers import HotHandlers, Reply
from serving_runtime.http_body import json_response, read_asgi_body
from serving_runtime.inference import model_metadata_v2, new_correlation_id
from serving_runtime.lifecycle import DRAINING_REASON, LIFECYCLE, Lifecycle, fail_startup
from serving_runtime.logs import configure_logging
from serving_runtime.metrics import RuntimeMetrics
from serving_runtime.registry import ModelRegistry
from serving_runtime.reload_broadcast import ReloadBroadcast
from serving_runtime.settings import Settings

log = logging.getLogger("serving_runtime.app")

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

    # --- native API --------------------------------------------------------------------

    async def predict(request: Request) -> Response:
        return respond(await hot.predict(body_reader(request),
                                         request.headers.get("x-correlation-id")))

    app.add_api_route(
        "/predict", predict, methods=["POST"], response_model=schemas.PredictResponse,
        summary="Predict with one model",
        description="Features are columns: each feature name maps to one value per row. "
        "422 names missing/unknown/non-numeric/NaN/inf/empty/ragged features; 404 for an "
        "unknown model; 413 for a body over MAX_BODY_BYTES; 400 for malformed JSON.",
        responses={400: {"model": schemas.ErrorResponse}, 404: {"model": schemas.ErrorResponse},
                   413: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse},
                   503: {"model": schemas.ErrorResponse}},
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
        responses={404: {"model": schemas.ErrorResponse}, 422: {"model": schemas.ErrorResponse}},
        openapi_extra=_request_body_doc(schemas.BatchRequest),
    )

    @app.get("/health", response_model=schemas.HealthResponse, summary="Health, JSON view",
             responses={503: {"model": schemas.HealthResponse}})
    async def health() -> Response:
        """`healthy` only when every expected model serves and its last (re)load worked.
        HTTP 200 when ready (every expected model serves), else 503 — also while the
        process drains after SIGTERM."""
        doc = registry.health()
        if lifecycle.draining:
            doc.update(status="degraded", ready=False)
            doc["reasons"].insert(0, DRAINING_REASON)
        return json_response(doc, 200 if doc["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    @app.post("/reload/{model_name}", status_code=202, response_model=schemas.ReloadResponse,
              summary="Hot-reload a model from its folder",
              responses={404: {"model": schemas.ErrorResponse}})
    async def reload(model_name: str, request: Request) -> Response:
        """Loads the folder's current artifact beside the serving version, checks it (the
        golden sample.json when present) and swaps it in; on failure the old version keeps
        serving and /health, /metrics and the logs say why."""
        cid = request.headers.get("x-correlation-id") or new_correlation_id()
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

    def v2_error(exc: ServingError) -> Response:
        return json_response({"error": exc.message}, exc.status_code)

    @app.get("/v2", response_model=schemas.V2ServerMetadata, tags=["v2"])
    async def v2_server_metadata() -> Response:
        return json_response({"name": "n1v1-ml-serving", "version": __version__,
                              "extensions": []})

    @app.get("/v2/health/live", tags=["v2"], summary="Liveness: the process serves HTTP")
    async def v2_live() -> Response:
        return json_response({"live": True})

    @app.get("/v2/health/ready", tags=["v2"],
             summary="Readiness: every expected model serves (503 otherwise)")
    async def v2_ready() -> Response:
        ready = registry.ready() and not lifecycle.draining  # a drain leaves the Service
        return json_response({"ready": ready}, 200 if ready else 503)

    # The version comes from the path only (`.../versions/{version}/...`): as a function
    # parameter, FastAPI would also read `?version=` on the unversioned routes, which the
    # hot-path layer does not.
    async def v2_model_metadata(request: Request, name: str) -> Response:
        try:
            model = hot.v2_model(name, request.path_params.get("version"))
            return json_response(model_metadata_v2(model))
        except ServingError as exc:
            return v2_error(exc)

    async def v2_model_ready(request: Request, name: str) -> Response:
        try:
            hot.v2_model(name, request.path_params.get("version"))
        except ServingError as exc:
            if exc.status_code == 503:
                return json_response({"name": name, "ready": False}, 503)
            return v2_error(exc)
        if lifecycle.draining:
            return json_response({"name": name, "ready": False}, 503)
        return json_response({"name": name, "ready": True})

    async def v2_infer(request: Request, name: str) -> Response:
        return respond(await hot.v2_infer(body_reader(request),
                                          request.headers.get("x-correlation-id"), name,
                                          request.path_params.get("version")))

    v2_errors = {400: {"model": schemas.V2Error}, 404: {"model": schemas.V2Error},
                 422: {"model": schemas.V2Error}}
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, v2_model_metadata, methods=["GET"], tags=["v2"],
                          response_model=schemas.V2ModelMetadata, responses=v2_errors)
        app.add_api_route(prefix + "/ready", v2_model_ready, methods=["GET"], tags=["v2"])
        app.add_api_route(
            prefix + "/infer", v2_infer, methods=["POST"], tags=["v2"],
            response_model=schemas.V2InferenceResponse, responses=v2_errors,
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
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app_from_env() -> Any:
    """uvicorn factory (`--factory`): settings from the environment only; the hot routes
    skip FastAPI's router (serving_runtime.fastpath.asgi)."""
    from serving_runtime.fastpath.asgi import with_hot_path

    return with_hot_path(create_app(Settings()))

