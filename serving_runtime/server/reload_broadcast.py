"""Hot reload across worker processes (`--workers N`).

A POST /reload lands on one worker; each worker has its own models. So the receiving
worker writes a token file `<dir>/<model>`, and every worker (itself included) polls
the directory and reloads a model whose token changed. `python -m serving_runtime`
creates the directory and passes it in N1V1_RELOAD_DIR when it starts several workers;
with one worker there is no directory and /reload calls the registry directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ENV_VAR = "N1V1_RELOAD_DIR"
POLL_SECONDS = 0.5

log = logging.getLogger("serving_runtime.reload")


class ReloadBroadcast:
    def __init__(self, directory: Path, interval: float = POLL_SECONDS) -> None:
        self.directory = directory
        self.interval = interval

    @classmethod
    def from_env(cls) -> ReloadBroadcast | None:
        d = os.environ.get(ENV_VAR)
        return cls(Path(d)) if d else None

    def announce(self, model_name: str) -> None:
        token = f"{time.time_ns()}-{os.getpid()}"
        tmp = self.directory / f".{model_name}.{os.getpid()}.tmp"
        tmp.write_text(token)
        os.replace(tmp, self.directory / model_name)

    def _tokens(self) -> dict[str, str]:
        out = {}
        for p in self.directory.iterdir():
            if not p.name.startswith("."):
                try:
                    out[p.name] = p.read_text()
                except OSError:
                    continue
        return out

    async def watch(self, reload: Callable[[str], Awaitable[bool]]) -> None:
        seen = self._tokens()  # a starting worker loads current files anyway
        while True:
            await asyncio.sleep(self.interval)
            try:
                current = self._tokens()
            except OSError as exc:
                log.error("reload directory unreadable", extra={"error": str(exc)})
                continue
            for name, token in current.items():
                if seen.get(name) != token:
                    seen[name] = token
                    await reload(name)
