"""uvicorn, with a drain on SIGTERM and an exit code for failed start-ups.

uvicorn's own SIGTERM handling stops accepting connections at once, closes idle keep-alive
connections (a client sending on one at that moment sees a reset: a failed request) and
then re-raises SIGTERM, so the process ends killed by the signal (exit 143), not with 0.
Kubernetes deletes a pod by sending SIGTERM while the Service may still route to it for a
moment, and clients hold pooled connections to it. So `DrainingServer`, on SIGTERM:

1. marks the process draining (serving_runtime.lifecycle): readiness answers 503 and every
   response says `Connection: close` (serving_runtime.fastpath.asgi), after which uvicorn's
   protocols close that connection, so each client reconnects — through the Service, to
   another pod — after its next answer instead of being cut off;
2. keeps accepting and answering, and leaves idle connections alone;
3. once no connection is open (but not before DRAIN_MIN_SECONDS, for connections being
   set up at the moment of the signal) or after `drain_seconds`, lets uvicorn shut down
   as usual (idle connections get a clean FIN, in-flight requests get
   SHUTDOWN_GRACE_SECONDS) and the process exits 0.

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
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from serving_runtime.lifecycle import LIFECYCLE, Lifecycle

log = logging.getLogger("serving_runtime.server")

# Connections being opened when the SIGTERM arrives still get accepted and answered.
DRAIN_MIN_SECONDS = 1.0
# After the drain, requests still in flight get this long (uvicorn's graceful timeout).
SHUTDOWN_GRACE_SECONDS = 5


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain_seconds: float,
                 lifecycle: Lifecycle = LIFECYCLE) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.lifecycle = lifecycle
        self._drain_logged = False

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

    async def on_tick(self, counter: int) -> bool:
        lifecycle = self.lifecycle
        if lifecycle.exit_code is not None or (
                lifecycle.draining and not self.should_exit and self._drain_over()):
            self.should_exit = True
        return await super().on_tick(counter)

    def _drain_over(self) -> bool:
        elapsed = self.lifecycle.drained_for()
        open_connections = len(self.server_state.connections)
        if not self._drain_logged:  # logged here, not in the signal handler (locks)
            self._drain_logged = True
            log.info("SIGTERM: draining (not ready; responses say Connection: close)",
                     extra={"drain_seconds": self.drain_seconds,
                            "open_connections": open_connections})
        if elapsed >= self.drain_seconds:
            log.info("drain period over: closing the remaining connections",
                     extra={"open_connections": open_connections})
            return True
        if open_connections == 0 and elapsed >= min(DRAIN_MIN_SECONDS, self.drain_seconds):
            log.info("drained: no connection left", extra={"seconds": round(elapsed, 2)})
            return True
        return False


def _worker_drain_seconds() -> float:
    from serving_runtime.settings import Settings

    return Settings().drain_seconds  # the parent put every setting in the environment


class DrainingProcess(multiprocess.Process):
    """A worker of uvicorn's supervisor that runs a DrainingServer and exits with the code
    the app asked for (EXIT_LOAD_FAILURE stops the supervisor: uvicorn's STARTUP_FAILURE)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(self.config, drain_seconds=_worker_drain_seconds())
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


def run_single(app: Any, *, drain_seconds: float, lifecycle: Lifecycle = LIFECYCLE,
               **config: Any) -> int:
    """Serve `app` in this process; the exit code: 0, or what the app asked for."""
    server = DrainingServer(
        uvicorn.Config(app, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, **config),
        drain_seconds=drain_seconds, lifecycle=lifecycle)
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


__all__ = ["DRAIN_MIN_SECONDS", "DrainingProcess", "DrainingServer", "run_single",
           "run_workers"]
