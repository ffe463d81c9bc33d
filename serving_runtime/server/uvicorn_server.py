"""uvicorn, with a drain on SIGTERM and an exit code for failed start-ups.

uvicorn's own SIGTERM handling stops accepting connections at once, closes idle keep-alive
connections (a client sending on one at that moment sees a reset: a failed request) and
then re-raises SIGTERM, so the process ends killed by the signal (exit 143), not with 0.
Kubernetes deletes a pod by sending SIGTERM while the Service may still route to it for a
moment, and clients hold pooled connections to it. So `DrainingServer`, on SIGTERM:

1. marks the process draining (serving_runtime.server.lifecycle): readiness answers 503 and every
   response says `Connection: close` (serving_runtime.server.hot_path), after which uvicorn's
   protocols close that connection, so each client reconnects — through the Service, to
   another pod — after its next answer instead of being cut off;
2. keeps accepting and answering, and leaves idle connections alone;
3. once no connection is open and none was answered for DRAIN_QUIET_SECONDS (counted
   from the signal, so connections being set up at that moment are still taken), or after
   `drain_seconds`, lets uvicorn shut down as usual (idle connections get a clean FIN,
   in-flight requests get SHUTDOWN_GRACE_SECONDS) and the process exits 0. "No
   connection open" alone is not enough: a client told `Connection: close` reconnects
   after every answer, so between two of its requests the server has no connection for
   a moment; stopping then closes the listening socket and its next request is refused.

With WORKERS > 1 uvicorn's supervisor forwards SIGTERM to each worker and waits for it:
`run_workers` makes the workers run a DrainingServer.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from serving_runtime.server import tls as tls_mod
from serving_runtime.server.lifecycle import LIFECYCLE, Lifecycle

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from serving_runtime.server.settings import Settings

log = logging.getLogger("serving_runtime.server.uvicorn_server")

# The drain ends early only after this long without an open connection or an answer
# (from the signal on: connections being opened at the SIGTERM still get answered).
DRAIN_QUIET_SECONDS = 1.0
# After the drain, requests still in flight get this long (uvicorn's graceful timeout).
SHUTDOWN_GRACE_SECONDS = 5


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain_seconds: float,
                 lifecycle: Lifecycle = LIFECYCLE,
                 tls: tls_mod.ReloadingTLS | None = None) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.lifecycle = lifecycle
        self.tls = tls  # TLS_CERT_FILE/TLS_KEY_FILE: this process's own context
        self._drain_logged = False
        self._answered = -1  # server_state.total_requests at the last tick
        self._quiet_since = 0.0  # drained_for() when the last connection/answer was seen

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.should_exit:
            super().handle_exit(sig, frame)  # SIGINT (Ctrl+C): uvicorn's prompt stop
            return
        if not self.started:
            # Still starting (models loading): nothing is routed here yet, nothing to drain.
            self.should_exit = True
            return
        # Not recorded in uvicorn's captured signals: re-raising it after the shutdown
        # would make the exit status "killed by SIGTERM" instead of 0.
        self.lifecycle.begin_drain()

    async def startup(self, sockets: list[Any] | None = None) -> None:
        if self.tls is not None:
            # our context instead of uvicorn's (which it builds only from ssl_certfile and
            # never reloads): create_server gets it, and its sni_callback moves each new
            # handshake to the newest reloaded context (server/tls.py)
            self.config.ssl = self.tls.context
            log.info("serving HTTPS", extra={"cert_file": str(self.tls.cert),
                                             "minimum_tls": "1.2"})
        await super().startup(sockets)

    async def on_tick(self, counter: int) -> bool:
        if self.tls is not None:
            # uvicorn ticks every 0.1 s; the files are looked at every few seconds only
            self.tls.maybe_reload()
        lifecycle = self.lifecycle
        if lifecycle.exit_code is not None or (
                lifecycle.draining and not self.should_exit and self._drain_over()):
            self.should_exit = True
        return await super().on_tick(counter)

    def _drain_over(self) -> bool:
        elapsed = self.lifecycle.drained_for()
        open_connections = len(self.server_state.connections)
        answered = self.server_state.total_requests
        if open_connections or answered != self._answered:
            self._answered = answered
            self._quiet_since = elapsed
        if not self._drain_logged:  # logged here, not in the signal handler (locks)
            self._drain_logged = True
            log.info("SIGTERM: draining (not ready; responses say Connection: close)",
                     extra={"drain_seconds": self.drain_seconds,
                            "open_connections": open_connections})
        if elapsed >= self.drain_seconds:
            log.info("drain period over: closing the remaining connections",
                     extra={"open_connections": open_connections})
            return True
        quiet = elapsed - self._quiet_since
        if open_connections == 0 and quiet >= min(DRAIN_QUIET_SECONDS, self.drain_seconds):
            log.info("drained: no connection left", extra={"seconds": round(elapsed, 2)})
            return True
        return False


def apply_connection_limits(settings: Settings) -> None:
    """HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS and MAX_CONNECTIONS_PER_WORKER for the
    connections this process accepts (serving_runtime/server/http_protocol.py)."""
    try:
        from serving_runtime.server import http_protocol
    except ImportError:  # no httptools: uvicorn's h11 protocol, which has no such limits
        return
    http_protocol.configure(http_protocol.ConnectionLimits.from_settings(settings))


class DrainingProcess(multiprocess.Process):
    """A worker of uvicorn's supervisor that runs a DrainingServer and exits with the code
    the app asked for (EXIT_LOAD_FAILURE stops the supervisor: uvicorn's STARTUP_FAILURE)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            from serving_runtime.server.settings import Settings

            settings = Settings()  # the parent put every setting in the environment
            apply_connection_limits(settings)
            self._server = DrainingServer(self.config, drain_seconds=settings.drain_seconds,
                                          tls=tls_mod.from_settings(settings))
        return self._server

    def target(self, sockets: Any = None) -> None:  # pragma: no cover - in the worker
        super().target(sockets)
        if LIFECYCLE.exit_code:
            sys.exit(LIFECYCLE.exit_code)


@contextlib.contextmanager
def _workers_of_class(cls: type[multiprocess.Process]) -> Iterator[None]:
    # uvicorn's Multiprocess builds workers from the module's `Process` in four places
    # (start, replacing a dead worker, SIGHUP, SIGTTIN) and has no hook for the server
    # class; swapping the name for the supervisor's lifetime covers all four.
    original = multiprocess.Process
    multiprocess.Process = cls  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]


def run_single(app: ASGIApp, *, drain_seconds: float, settings: Settings | None = None,
               lifecycle: Lifecycle = LIFECYCLE, **config: Any) -> int:
    """Serve `app` in this process; the exit code: 0, or what the app asked for.
    `settings` gives the connection limits (default: those of the defaults) and TLS."""
    if settings is not None:
        apply_connection_limits(settings)
    server = DrainingServer(
        uvicorn.Config(app, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, **config),
        drain_seconds=drain_seconds, lifecycle=lifecycle,
        tls=tls_mod.from_settings(settings) if settings is not None else None)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C, as uvicorn.run
        server.run()
    if lifecycle.exit_code:
        return lifecycle.exit_code
    return 0 if server.started else STARTUP_FAILURE


def run_workers(factory: str, *, workers: int, **config: Any) -> int:
    """Serve the app built by the import string `factory` in `workers` processes behind
    uvicorn's supervisor (each worker drains on SIGTERM); STARTUP_FAILURE when a worker
    failed to start (e.g. EXIT_LOAD_FAILURE), else 0."""
    cfg = uvicorn.Config(factory, factory=True, workers=workers,
                         timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, **config)
    sock = cfg.bind_socket()
    supervisor = multiprocess.Multiprocess(cfg, sockets=[sock])
    with _workers_of_class(DrainingProcess):
        supervisor.run()
    codes = [p.exitcode for p in supervisor.processes]
    return STARTUP_FAILURE if STARTUP_FAILURE in codes else 0


__all__ = ["DRAIN_QUIET_SECONDS", "DrainingProcess", "DrainingServer",
           "apply_connection_limits", "run_single", "run_workers"]
