"""The HTTP server: `create_app(settings)` builds the FastAPI application.

Every route comes from the table in `routes.py`. Hot routes (/predict, /predict/batch,
/v2/models/{name}[/versions/{version}]/infer) call `handlers.HotHandlers`, which parses
with orjson and validates by hand (models/inference.py): no pydantic on the request path,
no per-request log line, no middleware; their pydantic schemas are attached for the
OpenAPI docs only. In the server (`python -m serving_runtime`) the hot-path ASGI layer
(`hot_path.py`) calls the same handlers without FastAPI's router. The other routes call
`control.ControlHandlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Path
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving_runtime import __version__, schemas
from serving_runtime.errors import echo, encodable
from serving_runtime.models.inference import (
    CORRELATION_ID_RULE,
    accepted_correlation_id,
    new_correlation_id,
)
from serving_runtime.server import auth, grpc_server
from serving_runtime.server.control import ControlHandlers
from serving_runtime.server.handlers import HotHandlers, Reply
from serving_runtime.server.heap import tune_collector
from serving_runtime.server.hot_path import HotPathApp, send_unauthorized, with_hot_path
from serving_runtime.server.http_body import is_v2_path, json_response, read_asgi_body
from serving_runtime.server.lifecycle import LIFECYCLE, Lifecycle, fail_startup
from serving_runtime.server.logs import configure_logging
from serving_runtime.server.metrics import RuntimeMetrics
from serving_runtime.server.registry import ModelRegistry
from serving_runtime.server.reload_broadcast import ReloadBroadcast
from serving_runtime.server.routes import DOCUMENTED_REQUEST_MODELS, PARAM_DOCS, ROUTES, Route
from serving_runtime.server.settings import Settings

log = logging.getLogger("serving_runtime.server.app")

#: where CorrelationIdMiddleware leaves the request's (accepted or generated) id
CORRELATION_SCOPE_KEY = "n1v1.correlation_id"
_CID_HEADER = b"x-correlation-id"
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
    here (serving_runtime.server.hot_path) and set their own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                if not any(k.lower() == _CID_HEADER for k, _ in headers):
                    headers.append((_CID_HEADER, raw))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class AuthMiddleware:
    """Every FastAPI route but the open ones (AUTH_HEALTH, AUTH_METRICS) needs a bearer
    token (server/auth.py). Inside CorrelationIdMiddleware, so a 401 has the request's id;
    the hot routes are checked by the hot-path layer before they get here. A WebSocket
    (the runtime has no such route today; one added later must not be open) without an
    accepted token is closed before it is accepted, code 1008 (policy violation): the
    server answers the upgrade with 403."""

    def __init__(self, app: ASGIApp, authenticator: auth.Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket") and self.auth.protects(scope["path"]):
            failure = self.auth.check_asgi(scope["headers"])
            if failure is not None:
                if kind == "websocket":
                    await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION,
                                "reason": auth.MESSAGE[failure]})
                    return
                cid = scope.get(CORRELATION_SCOPE_KEY) or new_correlation_id()
                await send_unauthorized(send, failure, scope["path"], cid)
                return
        await self.app(scope, receive, send)


#: the WebSocket close code of a refused token (RFC 6455 section 7.4.1)
WS_POLICY_VIOLATION = 1008


def request_cid(request: Request) -> str:
    """The id CorrelationIdMiddleware chose for this request (a fresh one without it)."""
    return request.scope.get(CORRELATION_SCOPE_KEY) or new_correlation_id()


def error_response(request: Request, status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    """An error in the documented shape of the route's family: `{"error"}` under /v2,
    `{"detail", "correlation_id"}` elsewhere; X-Correlation-ID set either way."""
    cid = request_cid(request)
    path = request.url.path
    doc = ({"error": message} if is_v2_path(path)
           else {"detail": message, "correlation_id": cid})
    response = json_response(doc, status, cid)
    if headers:
        response.headers.update(headers)  # Allow, on a 405
    return response


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


def _request_body_doc(model: type) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def to_response(reply: Reply) -> Response:
    if reply.media_type is not None:
        return Response(reply.content, status_code=reply.status, media_type=reply.media_type)
    return json_response(reply.content, reply.status, reply.correlation_id)


def _endpoint(route: Route, target: HotHandlers | ControlHandlers, max_body: int) -> Any:
    """A FastAPI endpoint calling the route's handler; its signature declares the path
    parameters (documented in OpenAPI) and the request."""
    # the handler is looked up per request, as the hot-path layer does: both reach
    # whatever `app.state.hot` holds
    name = route.handler
    if route.hot:
        async def endpoint(request: Request, **params: str) -> Response:
            def read() -> Awaitable[bytes]:
                return read_asgi_body(request.receive, request.headers.get("content-length"),
                                      max_body)

            handler = getattr(target, name)
            return to_response(await handler(
                read, request.headers.get("x-correlation-id"),
                pin=request.headers.get(schemas.MODEL_VERSION_HEADER), **params))
    else:
        async def endpoint(request: Request, **params: str) -> Response:
            return to_response(await getattr(target, name)(request_cid(request), **params))

    sig = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=Request)]
    sig += [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY,
                              annotation=Annotated[str, Path(description=PARAM_DOCS[p])])
            for p in route.params]
    endpoint.__signature__ = inspect.Signature(sig, return_annotation=Response)  # type: ignore[attr-defined]
    endpoint.__name__ = route.operation or route.handler  # FastAPI's operationId from it
    return endpoint


def add_routes(app: FastAPI, hot: HotHandlers, control: ControlHandlers,
               max_body: int) -> None:
    """Every route of the table, documented from it."""
    for route in ROUTES:
        app.add_api_route(
            route.path, _endpoint(route, hot if route.hot else control, max_body),
            methods=[route.method], response_model=route.response_model,
            status_code=route.status_code, summary=route.summary,
            description=route.description or "", responses=dict(route.responses),
            tags=list(route.tags) or None,
            response_class=PlainTextResponse if route.text_response else JSONResponse,
            openapi_extra=(_request_body_doc(route.request_model)
                           if route.request_model is not None else None),
        )


def add_error_handlers(app: FastAPI) -> None:
    """Unknown routes (404) and methods (405) in the documented error shapes."""

    async def http_error(request: Request, exc: Exception) -> Response:
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


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, with the request schemas that only the docs use (the
    hot handlers validate by hand) and the correlation id header on every answer."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version,
                          description=app.description, routes=app.routes)
        comps = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in DOCUMENTED_REQUEST_MODELS:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(js.pop("$defs", {}))
            comps[model.__name__] = js
        _document_every_response(doc)
        app.openapi_schema = doc
    return app.openapi_schema


class BackgroundTasks:
    """Tasks the app starts and cancels at shutdown (model loads, reloads, the reload
    broadcast watch); a reference is kept so that none is garbage-collected mid-run."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()


class InferenceThreads:
    """The worker threads big predictions run in, at most INFERENCE_THREADS at once (the
    limiter is made inside the event loop, at start-up)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.limiter: anyio.CapacityLimiter | None = None

    def start(self) -> None:
        self.limiter = anyio.CapacityLimiter(self.count)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)


GRPC_STOP_GRACE_S = 2.0


def _lifespan(settings: Settings, lifecycle: Lifecycle, registry: ModelRegistry,
              broadcast: ReloadBroadcast | None, tasks: BackgroundTasks,
              threads: InferenceThreads, control: ControlHandlers) -> Callable[[FastAPI], Any]:
    hot = control.hot

    async def load_models() -> None:
        await registry.load_expected()
        # Only start-up counts: a failed hot reload keeps the old version serving.
        if settings.exit_on_load_failure:
            problems = registry.startup_failures()
            if problems:
                fail_startup("; ".join(problems), settings.termination_message_path,
                             lifecycle)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_collector()  # server/heap.py: fewer collections inside a body parse
        threads.start()
        log.info("runtime starting", extra={
            "models_dir": str(settings.models_dir), "pid": os.getpid(),
            "inference_threads": settings.inference_threads,
            "allow_unsafe_loading": settings.allow_unsafe_loading})
        if broadcast is None:
            tasks.spawn(load_models())  # liveness answers while models load
        else:
            # Several workers share one socket: a worker that has not finished start-up
            # takes no connections, so loading first keeps a half-loaded worker from
            # answering 503 while another one already reports ready.
            await load_models()
            tasks.spawn(broadcast.watch(registry.reload))
        # after the models in a worker (see above); its ServerReady tells loading apart
        grpc_srv = await grpc_server.start(settings, control,
                                           getattr(app.state, "overload", None),
                                           authenticator=app.state.auth)
        yield
        if grpc_srv is not None:
            # uvicorn has drained HTTP by now; calls in flight get a short grace (they take
            # milliseconds), and the rest of the termination grace period stays unspent
            await grpc_srv.stop(GRPC_STOP_GRACE_S)
        tasks.cancel_all()
        dropped = hot.shadow.close()  # shadow rows still queued are comparisons, not answers
        if dropped:
            log.info("shadow rows dropped at shutdown", extra={"rows": dropped})

    return lifespan


def create_app(settings: Settings | None = None,
               lifecycle: Lifecycle | None = None) -> FastAPI:
    """Build the runtime app. Models load in the background after start-up, so liveness
    answers at once and readiness turns 200 when every expected model serves. `lifecycle`
    (default: this process's) says when the server drains (readiness 503) and receives
    the exit request of EXIT_ON_LOAD_FAILURE (server/lifecycle.py)."""
    settings = settings or Settings()
    lifecycle = lifecycle or LIFECYCLE
    configure_logging(settings.log_level)
    metrics = RuntimeMetrics()
    registry = ModelRegistry(settings, metrics)
    broadcast = ReloadBroadcast.from_env()
    tasks = BackgroundTasks()
    threads = InferenceThreads(settings.inference_threads)
    hot = HotHandlers(registry, metrics, threads.run)
    control = ControlHandlers(registry, metrics, hot, lifecycle, broadcast, tasks.spawn)

    app = FastAPI(
        title="N1V1 model serving runtime",
        version=__version__,
        description="Predictions from scikit-learn, XGBoost and LightGBM models: the native API "
        "(/predict, /predict/batch) and the Open Inference Protocol v2 (/v2/...).",
        lifespan=_lifespan(settings, lifecycle, registry, broadcast, tasks, threads, control),
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle  # the hot-path layer adds Connection: close on a drain
    app.state.hot = hot  # the hot-path layer calls the same handlers
    # AUTH_TOKENS_DIR: None = no authentication; the hot path and gRPC check with it too
    app.state.auth = auth.from_settings(settings, on_failure=metrics.auth_failed)

    if app.state.auth is not None:  # added first: inside CorrelationIdMiddleware
        app.add_middleware(AuthMiddleware, authenticator=app.state.auth)
    # Every answer carries X-Correlation-ID (the request's when it follows the rule, else
    # a fresh one); the handlers set theirs, this covers the rest (404, 405...).
    app.add_middleware(CorrelationIdMiddleware)
    add_error_handlers(app)
    add_routes(app, hot, control, settings.max_body_bytes)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def create_app_from_env() -> HotPathApp:
    """uvicorn factory (`--factory`): settings from the environment only; the hot routes
    skip FastAPI's router (serving_runtime.server.hot_path)."""
    return with_hot_path(create_app(Settings()))

