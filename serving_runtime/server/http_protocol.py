"""uvicorn's httptools protocol, with the writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers on `http.response.start` and the body
on `http.response.body`: two `send()` system calls, two loopback segments and two wake-ups
of the reader per response. Profiling a single-row /predict under load put ~20 % of the
server's samples in those two writes. Gathering the writes made during one loop turn and
sending them together when the turn ends measured, same machine, same minute, one process,
16 connections: RF-10 10.5k -> 14.8k req/s and XGB-100 7.0k -> 9.1k req/s, p99 lower too.

The cost is that bytes leave at the end of the current loop turn rather than at once:
within one turn the loop is running other ready requests, so a response waits at most for
those (tens of microseconds each); `close()` and `write_eof()` send what is pending first.
Back-pressure (the real transport pausing the protocol) is seen one turn later than
without the wrapper, which matters only for responses streamed in many writes.

The protocol also defends the worker against slow and many clients (uvicorn has no
header or body timeout, and its `limit_concurrency` answers plain-text 503s even to
requests on connections it already holds):

- a request head must arrive within `header_timeout` of its first byte (or of the
  connection opening): else 408 (a silent connection is just closed); and be at most
  MAX_HEAD_BYTES: else 431 (httptools buffers a header however long it grows);
- its body within `body_timeout` of the head: else 408 naming what was missing — a
  slowloris body or one shorter than its Content-Length no longer waits forever;
- beyond `max_connections` open connections in this worker, a new connection is answered
  503 + Retry-After (JSON) and closed, except `GET /v2/health/live` (the process serves;
  a liveness restart would not help);
- an answer sent before the body arrived (413, 503) leaves the rest of the body to be
  read and dropped, at most `discard_max_bytes` and until the body deadline: closing a
  socket with unread data makes the kernel send a reset, and a reset can destroy the
  answer before the client reads it. When that answer closes the connection (draining,
  503), the server half-closes (FIN after the answer) and closes once the body is in.

Deadlines are fields set per request and checked by one sweep per worker every
SWEEP_SECONDS, not one timer per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving_runtime.models.inference import new_correlation_id
from serving_runtime.server.http_body import correlation_header, send_json
from serving_runtime.server.settings import Settings

log = logging.getLogger("serving_runtime.connections")

_DEFAULTS = Settings.model_fields
# A body answered early (413) is read and dropped up to this size; past it the connection
# is closed even if the client may then see a reset (it sends far more than any limit).
DISCARD_MAX_BYTES = 64 * 1024 * 1024
# A longer request head (request line + headers) is answered 431 and closed. Counted per
# read while the head is incomplete, so the bound holds within one read (up to 256 KiB) more.
MAX_HEAD_BYTES = 64 * 1024
SWEEP_SECONDS = 0.25
_WARN_EVERY_S = 10.0  # a flood must not turn into a flood of log lines


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS, MAX_CONNECTIONS_PER_WORKER."""

    header_timeout: float = _DEFAULTS["header_timeout_seconds"].default
    body_timeout: float = _DEFAULTS["body_timeout_seconds"].default
    max_connections: int = _DEFAULTS["max_connections_per_worker"].default
    discard_max_bytes: int = DISCARD_MAX_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(header_timeout=settings.header_timeout_seconds,
                   body_timeout=settings.body_timeout_seconds,
                   max_connections=settings.max_connections_per_worker)


_limits = ConnectionLimits()


def configure(limits: ConnectionLimits) -> None:
    """The limits of the connections this process accepts from now on (the server sets
    them from its settings before serving; uvicorn builds protocols without arguments)."""
    global _limits
    _limits = limits


def current_limits() -> ConnectionLimits:
    return _limits


class CoalescingTransport:
    """A transport whose `write`s within one loop turn leave in one `write` of the real
    transport. Everything else is the real transport's."""

    __slots__ = ("_transport", "_loop", "_pending", "close_hook")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 close_hook: Callable[[], bool] | None = None) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        # called by close() after sending what is pending; True: the protocol closes later
        self.close_hook = close_hook

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        hook = self.close_hook
        if hook is not None and hook():
            return
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Sweeper:
    """Checks the deadlines of a worker's connections every SWEEP_SECONDS while it has any."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.handle: asyncio.TimerHandle | None = None

    def ensure(self) -> None:
        if self.handle is None:
            self.handle = self.loop.call_later(SWEEP_SECONDS, self.run)

    def run(self) -> None:
        self.handle = None
        now = self.loop.time()
        for proto in list(self.connections):
            check = getattr(proto, "check_deadline", None)
            if check is not None:
                check(now)
        if self.connections:
            self.ensure()


_IDLE, _HEAD, _BODY, _DISCARD = "idle", "head", "body", "discard"
_DROP = "drop"  # answered 408 mid-head: what still comes is read and dropped, never parsed
_refused = 0
_last_warning = 0.0


def _error_doc(message: str, path: str | None, cid: str) -> dict[str, Any]:
    """The runtime's error body: V2 routes `{"error"}`, native `{"detail", "correlation_id"}`."""
    if path is not None and path.startswith("/v2/"):
        return {"error": message}
    return {"detail": message, "correlation_id": cid}


def _request_cid(headers: list[tuple[bytes, bytes]] | None) -> str:
    for key, value in headers or ():
        if key == b"x-correlation-id":
            cid = value.decode("latin-1")
            if correlation_header(cid) is not None:
                return cid
            break
    return new_correlation_id()


def _over_capacity_app(app: Any, cap: int) -> Callable[..., Awaitable[None]]:
    message = (f"server at its connection limit ({cap} connections per worker, "
               f"MAX_CONNECTIONS_PER_WORKER); retry after 1 s")
    headers = [(b"retry-after", b"1"), (b"connection", b"close")]

    async def over_capacity(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v2/health/live":
            await app(scope, receive, send)  # live: a restart would not add capacity
            return
        cid = _request_cid(scope.get("headers"))
        await send_json(send, _error_doc(message, scope.get("path"), cid), 503, cid, headers)

    return over_capacity


def _warn_refused(cap: int) -> None:
    global _refused, _last_warning
    _refused += 1
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY_S:
        log.warning("connection limit reached: new connections are answered 503",
                    extra={"max_connections_per_worker": cap, "refused": _refused})
        _refused, _last_warning = 0, now


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.run(..., http=CoalescingHttpToolsProtocol)`: coalesced writes, plus the
    limits of `configure()` (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _limits
        self._deadline: float | None = None  # loop.time() by which _phase must be over
        self._phase = _IDLE
        self._body_bytes = 0  # of the current request
        self._head_bytes = 0  # read since the current head began (or the connection opened)
        self._discarded = 0
        self._body_done = False  # all of the current request's body is in (read or dropped)
        self._half_closed = False
        self._closing = False  # closed by us or lost: close() must not linger any more

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        super().connection_made(
            CoalescingTransport(transport, loop, self._linger_on_close)  # type: ignore[arg-type]
        )
        cap = self.limits.max_connections
        if len(self.connections) > cap:
            self.app = _over_capacity_app(self.app, cap)
            _warn_refused(cap)
        self._deadline = loop.time() + self.limits.header_timeout
        state = self.server_state
        sweeper = getattr(state, "n1v1_sweeper", None)
        if sweeper is None:
            sweeper = _Sweeper(loop, self.connections)
            state.n1v1_sweeper = sweeper  # type: ignore[attr-defined]
        sweeper.ensure()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._deadline = None
        super().connection_lost(exc)

    # --- per-request deadlines (parser callbacks) --------------------------------------

    def on_message_begin(self) -> None:
        if self._closing:
            return  # bytes after a body we only discarded, parsed in the same feed
        self._phase = _HEAD
        self._head_bytes = 0
        self._deadline = self.loop.time() + self.limits.header_timeout
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._closing:
            return
        self._unset_keepalive_if_required()  # armed below when a discarded body ended
        self._phase = _BODY
        self._body_bytes = 0
        self._head_bytes = 0  # the head is over: the bytes read on are the body's
        self._body_done = False
        self._deadline = self.loop.time() + self.limits.body_timeout
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done = True  # close() need not linger any more (uvicorn's more_body stays
        # True for a dropped body: its on_message_complete ignores an answered cycle)
        if self._phase == _DISCARD:
            self._phase = _IDLE
            self._deadline = None
            if self._half_closed:  # the answer said close; all of the body is in: no reset
                self._close_now()
            elif self.timeout_keep_alive_task is None:
                # idle from now on; uvicorn armed its keep-alive timeout at the answer, and
                # the body's bytes since then cancelled it
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler)
            return
        self._phase = _IDLE
        self._deadline = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # answered before the body arrived: drop the rest. Only if the answer is to the
        # request whose body is being read: a pipelined request's head may be in already,
        # its body not, when the response to the one before it completes.
        cycle = self.cycle
        if self._phase == _BODY and cycle is not None and cycle.response_complete:
            self._phase = _DISCARD
            self._discarded = 0
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            super().data_received(data)
            return
        if phase == _DROP:
            self._discarded += len(data)
            if self._discarded > self.limits.discard_max_bytes:
                self._close_now()
            return
        if phase != _DISCARD:
            self._head_bytes += len(data)
            super().data_received(data)
            # only a head still incomplete after this read (on_headers_complete restarts
            # the count, so the body's bytes are not counted)
            if (self._head_bytes > MAX_HEAD_BYTES and self._phase == _HEAD
                    and not self._closing):
                answered = self.cycle is None or self.cycle.response_complete
                if answered:
                    self._answer(431, b"Request Header Fields Too Large",
                                 f"request head larger than {MAX_HEAD_BYTES} bytes", None)
                log.info("request head too large: connection closed",
                         extra={"head_bytes": self._head_bytes, "max_head_bytes": MAX_HEAD_BYTES,
                                "answered_431": answered})
                self._close_now()
            return
        self._discarded += len(data)
        if self._discarded > self.limits.discard_max_bytes:
            self._close_now()
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)  # on_body drops it, on_message_complete ends it
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._close_now()  # no second answer on a connection already answered

    def _linger_on_close(self) -> bool:
        """CoalescingTransport.close(): answered with `Connection: close` before the body
        arrived — send a FIN after the answer and read the rest (True) instead of closing
        on unread data, which the kernel turns into a reset."""
        cycle = self.cycle
        if (self._closing or self._half_closed or self.parser is None or cycle is None
                or not cycle.response_complete or not cycle.more_body or self._body_done):
            self._closing = True
            return False
        self._half_closed = True
        self._phase = _DISCARD
        if self._deadline is None:  # never without one: the sweep ends the linger
            self._deadline = self.loop.time() + self.limits.body_timeout
        self.transport.write_eof()
        return True

    def shutdown(self) -> None:
        if self._phase in (_DISCARD, _DROP):
            self._close_now()  # the server is exiting: stop reading what it would drop
            return
        super().shutdown()

    def _close_now(self) -> None:
        self._closing = True
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    # --- the sweep -----------------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        deadline = self._deadline
        if deadline is None or now < deadline or self._closing:
            return
        phase = self._phase
        cycle = self.cycle
        if phase == _HEAD and (cycle is None or cycle.response_complete):
            t = self.limits.header_timeout
            self._answer(408, b"Request Timeout", f"request head not received within {t:g} s "
                         f"(HEADER_TIMEOUT_SECONDS)", None)
            if self.parser is not None and self._head_bytes:
                self._drop_after_answer(now)
                return
        elif phase == _BODY and cycle is not None and not cycle.response_started:
            t = self.limits.body_timeout
            got = self._body_bytes
            declared = next((v for k, v in self.headers if k == b"content-length"), None)
            what = (f"{got} of {declared.decode('latin-1')} bytes (Content-Length)"
                    if declared is not None else f"{got} bytes of a chunked body, unfinished")
            self._answer(408, b"Request Timeout", f"request body incomplete after {t:g} s: "
                         f"received {what} (BODY_TIMEOUT_SECONDS)", cycle.scope.get("path"))
            cycle.disconnected = True  # the app's receive() says disconnect, its send() is a no-op
            cycle.message_event.set()
        log.debug("connection timed out", extra={"phase": phase})
        self._close_now()  # idle (never sent a byte), discarding, or answered: just close

    def _drop_after_answer(self, now: float) -> None:
        """A FIN after the 408, then the client's further bytes read and dropped until the
        body timeout: closing on unread data makes the kernel send a reset, which the
        client sees instead of the end of the answer (or before reading it)."""
        self._phase = _DROP
        self._discarded = 0
        self._half_closed = True  # close() must not linger again
        self._deadline = now + self.limits.body_timeout
        self.transport.write_eof()

    def _answer(self, status: int, phrase: bytes, message: str, path: str | None) -> None:
        """An error answer written by the protocol itself (no request reached the app, or
        the app waits for a body that is not coming), then `Connection: close`."""
        cid = _request_cid(self.headers if self._phase == _BODY else None)
        body = orjson.dumps(_error_doc(message, path, cid))
        head = [b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n" % (status, phrase),
                b"content-length: %d\r\n" % len(body)]
        value = correlation_header(cid)
        if value:
            head.append(b"x-correlation-id: " + value + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)


__all__ = ["DISCARD_MAX_BYTES", "MAX_HEAD_BYTES", "CoalescingHttpToolsProtocol",
           "CoalescingTransport", "ConnectionLimits", "configure", "current_limits"]
