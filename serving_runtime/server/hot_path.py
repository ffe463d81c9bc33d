"""A thin ASGI layer in front of the FastAPI app for the hot routes.

FastAPI's router, dependency machinery and middleware stack cost more per request than a
compiled RF-10 prediction (measured: ~2.2k rps for a FastAPI route vs ~5.9k for a raw ASGI
callable doing the same orjson work, same machine, same moment), and Starlette's Request
and Response objects another ~10 us. The hot endpoints' logic lives in
`serving_runtime.server.handlers.HotHandlers` (the FastAPI routes wrap the same methods), so
this layer reads the body and writes the reply with raw ASGI messages and calls those
methods directly: same validation, messages, metrics and wire format, minus the routing.
Everything else (docs, health, metrics, reload, lifespan) goes to the FastAPI app.

It also sheds load: when the event loop runs late by more than `shed_lag_s` (the loop is
saturated and requests wait in socket buffers), hot requests get 503 with Retry-After at
once instead of queueing for seconds.

While the process drains after SIGTERM (server/uvicorn_server.py), every response, hot
or not, carries `Connection: close`: uvicorn's protocols then close the connection after
it, and a kept-alive client reconnects — through the Service, to a pod that stays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving_runtime.models.inference import accepted_correlation_id, new_correlation_id
from serving_runtime.schemas import MODEL_VERSION_HEADER
from serving_runtime.server import auth
from serving_runtime.server.http_body import is_v2_path, read_asgi_body, send_json
from serving_runtime.server.lifecycle import LIFECYCLE
from serving_runtime.server.routes import match_hot
from serving_runtime.server.settings import Settings

# Shed when the loop is this late (≈ how long a request already waits in this process);
# Settings.shed_lag_ms. Measured: at 20 ms, 16 connections sending 64-row batches (~1.5 ms
# each, so ~25 ms of queued work) were shed by 30-45 % without any real overload, while p99
# stayed set by the shared machine's scheduling noise anyway; 50 ms sheds only a growing
# backlog.
SHED_LAG_S = Settings.model_fields["shed_lag_ms"].default / 1000.0
_PROBE_S = 0.005
_IDLE_PROBE_S = 0.1
SHED_MIN_ARRIVALS = 4
_PROBES_LATE = 3
_RETRY_AFTER = [(b"retry-after", b"1")]
_CLOSE = (b"connection", b"close")
_CLOSE_HEADERS = [_CLOSE]
_PIN_HEADER = MODEL_VERSION_HEADER.lower().encode()
_AUTHORIZATION = b"authorization"
_DEFAULT_MAX_BODY = Settings.model_fields["max_body_bytes"].default


class HotPathApp:
    def __init__(self, app: ASGIApp, *, shed_lag_s: float | None = None) -> None:
        """`app` from create_app: its `state.hot` handlers serve the hot routes and its
        settings give the body limit and, unless `shed_lag_s` is given, the shedding lag."""
        self.app = app
        state = getattr(app, "state", None)
        self.hot = getattr(state, "hot", None)  # HotHandlers; None: everything passes through
        settings = getattr(state, "settings", None)
        self.max_body = settings.max_body_bytes if settings else _DEFAULT_MAX_BODY
        self.lifecycle = getattr(state, "lifecycle", None) or LIFECYCLE
        # AUTH_TOKENS_DIR: the hot routes skip FastAPI and so its AuthMiddleware; checked
        # here with the same Authenticator
        self.auth: auth.Authenticator | None = getattr(state, "auth", None)
        if shed_lag_s is None:
            shed_lag_s = settings.shed_lag_ms / 1000.0 if settings else SHED_LAG_S
        self.shed_lag_s = shed_lag_s
        self.lag = 0.0  # how late the last loop probe fired (seconds)
        self._probe: asyncio.Task[None] | None = None
        self.shed_total = 0
        if state is not None:
            state.overload = self  # the gRPC server (server/grpc_server.py) sheds with it
        self._arrivals = 0  # hot requests since the last loop probe
        self.recent_arrivals = 0

    # FastAPI/Starlette attributes (state, routes, openapi...) stay reachable for tests
    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["app"], name)

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        recent = [0.0] * _PROBES_LATE
        while True:
            # Idle (no hot request since the last probe): probe 20x less often, so an idle
            # pod costs almost no CPU (200 wake-ups a second held a 100m-CPU pod at 18%,
            # above a CPU autoscaling target). Lateness is measured against the sleep asked.
            pause = _PROBE_S if self._arrivals or self.recent_arrivals else _IDLE_PROBE_S
            t0 = loop.time()
            await asyncio.sleep(pause)
            recent.pop(0)
            recent.append(max(0.0, loop.time() - t0 - pause))
            # several late probes in a row: one alone is often the OS scheduling another
            # process (this machine is shared), not a backlog of requests
            self.lag = min(recent)
            self.recent_arrivals, self._arrivals = self._arrivals, 0

    def overloaded(self) -> bool:
        """Count a hot request's arrival; True when it should be shed (the gRPC server
        asks too: one loop, one verdict)."""
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._watch_loop())
        self._arrivals += 1
        # a late loop alone may be a model (re)load or another process; a late loop with
        # requests piling in is overload
        return self.lag > self.shed_lag_s > 0 and self.recent_arrivals >= SHED_MIN_ARRIVALS

    def shed_message(self) -> str:
        return f"server overloaded (event loop {self.lag * 1000:.0f} ms behind); retry after 1 s"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hot is not None:
            hot_route = match_hot(scope["method"], scope["path"])
            if hot_route is not None:
                route, params = hot_route
                cid = declared = pin = authorization = None
                for key, value in scope["headers"]:
                    if key == b"x-correlation-id" and cid is None:  # first, as Starlette
                        cid = value.decode("latin-1")
                    elif key == b"content-length":
                        declared = value
                    elif key == _PIN_HEADER and pin is None:
                        pin = value.decode("latin-1")
                    elif key == _AUTHORIZATION and authorization is None:
                        authorization = value
                if self.auth is not None:
                    # before the body is read and before shedding: a refusal costs nothing
                    failure = self.auth.check(authorization)
                    if failure is not None:
                        await send_unauthorized(
                            send, failure, route.path,
                            accepted_correlation_id(cid) or new_correlation_id(),
                            _CLOSE_HEADERS if self.lifecycle.draining else None)
                        return
                if self.overloaded():
                    await self._shed(send, cid, v2=is_v2_path(route.path))
                    return
                max_body = self.max_body

                def read() -> Awaitable[bytes]:
                    return read_asgi_body(receive, declared, max_body)

                reply = await getattr(self.hot, route.handler)(read, cid, pin=pin, **params)
                # draining is read when answering: requests in flight at the SIGTERM close too
                await send_json(send, reply.content, reply.status, reply.correlation_id,
                                _CLOSE_HEADERS if self.lifecycle.draining else None)
                return
        elif scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            finally:
                if self._probe is not None:
                    self._probe.cancel()
                    with contextlib.suppress(BaseException):
                        await self._probe
            return
        if self.lifecycle.draining and scope["type"] == "http":
            send = _closing(send)
        await self.app(scope, receive, send)

    async def _shed(self, send: Send, cid: str | None, *, v2: bool) -> None:
        self.shed_total += 1
        # the request's id only if it follows the rule (never echo a hostile header)
        cid = accepted_correlation_id(cid) or new_correlation_id()
        msg = self.shed_message()
        doc: dict[str, Any] = {"error": msg} if v2 else {"detail": msg, "correlation_id": cid}
        headers = _RETRY_AFTER + _CLOSE_HEADERS if self.lifecycle.draining else _RETRY_AFTER
        await send_json(send, doc, 503, cid, headers)


async def send_unauthorized(send: Send, failure: auth.Failure, path: str, cid: str,
                            extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """401 in the route family's error shape (`{"error"}` under /v2, `{"detail",
    "correlation_id"}` elsewhere) with the RFC 6750 challenge in WWW-Authenticate; shared
    by the hot path and the FastAPI routes' AuthMiddleware (app.py)."""
    message = auth.MESSAGE[failure]
    doc: dict[str, Any] = ({"error": message} if is_v2_path(path)
                           else {"detail": message, "correlation_id": cid})
    await send_json(send, doc, 401, cid, auth.challenge_headers(failure) + (extra_headers or []))


def _closing(send: Send) -> Send:
    """`send` with `Connection: close` added to the response head (the FastAPI routes,
    while draining)."""

    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(k.lower() == b"connection" for k, _ in headers):
                headers.append(_CLOSE)
            message = {**message, "headers": headers}
        await send(message)

    return send_closing


def with_hot_path(app: ASGIApp) -> HotPathApp:
    """`app` (from create_app) behind the hot-path layer, per its settings."""
    return HotPathApp(app)


__all__ = ["HotPathApp", "send_unauthorized", "with_hot_path"]
