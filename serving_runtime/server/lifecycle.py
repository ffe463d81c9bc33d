"""Process life-cycle state shared by the server (server/uvicorn_server.py) and the app.

Two things end a runtime process, and the app has to know about both:

- SIGTERM (Kubernetes deleting the pod) starts a *drain*: readiness answers 503 at once so
  the pod leaves the Service, every response carries `Connection: close` so kept-alive
  clients reconnect (to another pod), and the server exits once no connection is left or
  DRAIN_SECONDS have passed.
- With EXIT_ON_LOAD_FAILURE, a model that fails to load at start-up makes the process exit
  with EXIT_LOAD_FAILURE after writing the reason to the Kubernetes termination-message file,
  so the pod's status says why instead of a pod that is live but never ready.

A signal belongs to the process, not to one app object, hence one `LIFECYCLE` per process
(create_app takes another one for tests that want their own).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("serving_runtime.server.lifecycle")

# The exit code of a start-up that failed (docs/contracts.md). It is uvicorn's own
# STARTUP_FAILURE too, on purpose: with WORKERS > 1, uvicorn's supervisor stops (instead of
# restarting the worker forever) when a worker exits with it.
EXIT_LOAD_FAILURE = 3
# Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_MAX_BYTES = 4000
DRAINING_REASON = ("draining: the server is shutting down (SIGTERM); it still answers, with "
                   "Connection: close")


class Lifecycle:
    """Whether this process is draining, and whether it was asked to exit (with what)."""

    def __init__(self) -> None:
        self.drain_started: float | None = None  # time.monotonic() of the SIGTERM
        self.exit_code: int | None = None
        self.exit_reason: str | None = None

    @property
    def draining(self) -> bool:
        return self.drain_started is not None

    def begin_drain(self) -> bool:
        """Start draining; False when already draining. Safe in a signal handler (no
        locks, no logging)."""
        if self.drain_started is not None:
            return False
        self.drain_started = time.monotonic()
        return True

    def drained_for(self) -> float:
        """Seconds since the drain began (0 when not draining)."""
        return 0.0 if self.drain_started is None else time.monotonic() - self.drain_started

    def request_exit(self, code: int, reason: str) -> None:
        """Ask the server to stop and the process to exit with `code` (the server polls)."""
        self.exit_code, self.exit_reason = code, reason


LIFECYCLE = Lifecycle()


def one_line(message: str, limit: int = TERMINATION_MESSAGE_MAX_BYTES) -> str:
    """`message` on one line, at most `limit` UTF-8 bytes (cut with an ellipsis)."""
    text = " ".join(message.split())
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "..."


def write_termination_message(path: Path, message: str) -> bool:
    """Write `message` to the Kubernetes termination-message file when it can be written
    (in a pod the kubelet mounts it; elsewhere the folder may not exist). Never raises:
    failing to explain an exit must not change the exit."""
    try:
        target = path if path.exists() else path.parent
        if not path.parent.is_dir() or not os.access(target, os.W_OK):
            log.warning("termination message not written: path not writable",
                        extra={"path": str(path)})
            return False
        path.write_text(message)
        return True
    except OSError as exc:
        log.warning("termination message not written",
                    extra={"path": str(path), "error": str(exc)})
        return False


def fail_startup(reason: str, termination_message_path: Path,
                 lifecycle: Lifecycle = LIFECYCLE) -> None:
    """Log `reason`, write it as the termination message and ask the process to exit
    with EXIT_LOAD_FAILURE."""
    reason = one_line(reason)
    log.error("exiting: start-up loading failed",
              extra={"reason": reason, "exit_code": EXIT_LOAD_FAILURE})
    write_termination_message(termination_message_path, reason)
    lifecycle.request_exit(EXIT_LOAD_FAILURE, reason)
