"""The HTTP server: `create_app(settings)` builds the FastAPI application.

Hot routes (/predict, /predict/batch, /v2/models/{name}/infer) take the raw Request,
parse it with orjson and validate it by hand (serving_runtime.inference): no pydantic on
the request path, no per-request log line, no middleware. Their pydantic schemas are
attached for the OpenAPI docs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
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
from serving_runtime.http_body import json_response, read_body
from serving_runtime.inference import (
    infer_v2,
    model_metadata_v2,
    model_name_of,
    new_correlation_id,
    parse_json,
    prepare_batch,
    prepare_predict,
    run_batch,
    run_predict,
)
from serving_runtime.logs import configure_logging, correlation_id_var
from serving_runtime.metrics import UNKNOWN_MODEL, RuntimeMetrics
from serving_runtime.registry import ModelRegistry
from serving_runtime.reload_broadcast import ReloadBroadcast
from serving_runtime.settings import Settings

log = logging.getLogger("serving_runtime.app")

# Requests with at least this many rows are predicted in a worker thread: below it the
# thread hop costs more than the event-loop time it would free.
OFFLOAD_MIN_ROWS = 256


def _body_cid(body: Any) -> str | None:
    if type(body) is dict:
        cid = body.get("correlation_id")
        if type(cid) is str and cid:
            return cid
    return None


def _schema_ref(model: type) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _request_body_doc(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": _schema_ref(model)}}}}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the runtime app. Models load in the background after start-up, so liveness
    answers at once and readiness turns 200 when every expected model serves."""
    settings = settings or Settings()
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

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limiter_box.append(anyio.CapacityLimiter(settings.inference_threads))
        log.info("runtime starting", extra={
            "models_dir": str(settings.models_dir), "pid": os.getpid(),
            "inference_threads": settings.inference_threads,
            "allow_unsafe_loading": settings.allow_unsafe_loading})
        if broadcast is None:
            spawn(registry.load_expected())  # liveness answers while models load
        else:
            # Several workers share one socket: a worker that has not finished start-up
            # takes no connections, so loading first keeps a half-loaded worker from
            # answering 503 while another one already reports ready.
            await registry.load_expected()
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

    async def offload(fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter_box[0])

    def native_error(exc: ServingError, cid: str) -> Response:
        if log.isEnabledFor(logging.DEBUG):
            correlation_id_var.set(cid)
            log.debug("request refused", extra={"status": exc.status_code, "error": exc.message})
        return json_response({"detail": exc.message, "correlation_id": cid},
                             exc.status_code, cid)

    def internal_error(what: str, cid: str) -> Response:
        correlation_id_var.set(cid)
        log.exception("internal error", extra={"during": what})
        return json_response(
            {"detail": f"internal error during {what}; correlation id {cid}",
             "correlation_id": cid}, 500, cid)

    # --- native API --------------------------------------------------------------------

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        header_cid = request.headers.get("x-correlation-id")
        in_flight = metrics.in_flight
        in_flight.inc()
        name = UNKNOWN_MODEL
        body: Any = None
        try:
            body = parse_json(await read_body(request, max_body))
            model = registry.get(model_name_of(body))
            name = model.name
            prepared = prepare_predict(model, body, correlation_id=header_cid)
            if prepared.n_rows >= OFFLOAD_MIN_ROWS:
                out = await offload(run_predict, prepared)
            else:
                out = run_predict(prepared)
        except ServingError as exc:
            counters = metrics.for_model(name)
            counters[1 if exc.status_code < 500 else 2].inc()
            return native_error(exc, header_cid or _body_cid(body) or new_correlation_id())
        except Exception:
            metrics.for_model(name)[2].inc()
            return internal_error(f"prediction with model {name}",
                                  header_cid or _body_cid(body) or new_correlation_id())
        finally:
            in_flight.dec()
        ok, _, _, latency = metrics.for_model(name)
        ok.inc()
        latency.observe(time.perf_counter() - started)
        return json_response(out, 200, out["correlation_id"])

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
        started = time.perf_counter()
        cid = request.headers.get("x-correlation-id") or new_correlation_id()
        metrics.in_flight.inc()
        try:
            body = parse_json(await read_body(request, max_body))
            prepared, batch_size = prepare_batch(registry.get, body, correlation_id=cid)
            rows = sum(p.n_rows for p in prepared)
            if rows >= OFFLOAD_MIN_ROWS:
                outs = await offload(run_batch, prepared, batch_size)
            else:
                outs = run_batch(prepared, batch_size)
        except ServingError as exc:
            metrics.for_model(UNKNOWN_MODEL)[1 if exc.status_code < 500 else 2].inc()
            return native_error(exc, cid)
        except Exception:
            metrics.for_model(UNKNOWN_MODEL)[2].inc()
            return internal_error("batch prediction", cid)
        finally:
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        # every sub-request counts as one answered request and one latency observation
        for name, count in Counter(p.model.name for p in prepared).items():
            ok, _, _, latency = metrics.for_model(name)
            ok.inc(count)
            for _ in range(count):
                latency.observe(elapsed)
        return json_response(outs, 200, cid)

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
        HTTP 200 when ready (every expected model serves), else 503."""
        doc = registry.health()
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
            return native_error(ModelNotFoundError(model_name), cid)
        if broadcast is not None:
            broadcast.announce(model_name)  # every worker process reloads
        else:
            spawn(registry.reload(model_name))
        return json_response({"message": f"Reloading model {model_name}"}, 202, cid)

    # --- Open Inference Protocol v2 -----------------------------------------------------

    def v2_error(exc: ServingError, cid: str | None = None) -> Response:
        return json_response({"error": exc.message}, exc.status_code, cid)

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
        ready = registry.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    def _v2_model(name: str, version: str | None) -> Any:
        model = registry.get(name)
        if version is not None and version != model.version:
            raise ModelNotFoundError(f"{name} version {version}")
        return model

    async def v2_model_metadata(name: str, version: str | None = None) -> Response:
        try:
            return json_response(model_metadata_v2(_v2_model(name, version)))
        except ServingError as exc:
            return v2_error(exc)

    async def v2_model_ready(name: str, version: str | None = None) -> Response:
        try:
            _v2_model(name, version)
        except ServingError as exc:
            if exc.status_code == 503:
                return json_response({"name": name, "ready": False}, 503)
            return v2_error(exc)
        return json_response({"name": name, "ready": True})

    async def v2_infer(request: Request, name: str, version: str | None = None) -> Response:
        started = time.perf_counter()
        cid = request.headers.get("x-correlation-id")
        metrics.in_flight.inc()
        label = UNKNOWN_MODEL
        try:
            model = _v2_model(name, version)
            label = model.name
            body = parse_json(await read_body(request, max_body))
            out = infer_v2(model, body, request_id=cid)
        except ServingError as exc:
            metrics.for_model(label)[1 if exc.status_code < 500 else 2].inc()
            return v2_error(exc, cid)
        except Exception:
            metrics.for_model(label)[2].inc()
            cid = cid or new_correlation_id()
            correlation_id_var.set(cid)
            log.exception("internal error", extra={"during": f"v2 inference with {name}"})
            return json_response({"error": f"internal error; correlation id {cid}"}, 500, cid)
        finally:
            metrics.in_flight.dec()
        ok, _, _, latency = metrics.for_model(label)
        ok.inc()
        latency.observe(time.perf_counter() - started)
        return json_response(out, 200, cid or out["id"])

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

