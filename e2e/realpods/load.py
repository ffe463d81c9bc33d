"""Bounded keep-alive load through a Service: what a trading engine's client does.

Each worker thread holds one kept-alive HTTP/1.1 connection (httpx, no retries: a failure
must be counted, not hidden) and sends /predict in a loop until stopped or a bound is hit.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

MAX_SECONDS = 120.0  # every loop ends by itself, whatever the test does
MAX_REQUESTS = 60_000


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    closes: int = 0  # answers with `Connection: close` (a draining pod)
    errors: list[str] = field(default_factory=list)
    last_versions: list[str] = field(default_factory=list)


class KeepAliveLoad:
    def __init__(self, url: str, body: dict[str, Any], *, connections: int = 4) -> None:
        self.url = f"{url}/predict"
        self.body = body
        self.connections = connections
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(connections)]
        self._t0 = 0.0

    def __enter__(self) -> KeepAliveLoad:
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        return self.result

    def _record(self, version: str | None, error: str | None, close: bool) -> None:
        with self._lock:
            r = self.result
            r.sent += 1
            r.closes += close
            if error is not None:
                r.failed += 1
                if len(r.errors) < 20:
                    r.errors.append(error)
            else:
                assert version is not None
                r.versions[version] += 1
                r.last_versions = (r.last_versions + [version])[-50:]

    def _run(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(timeout=10, limits=limits) as client:
            while not self._stop.is_set():
                if (time.monotonic() - self._t0 > MAX_SECONDS
                        or self.result.sent >= MAX_REQUESTS):
                    return
                try:
                    resp = client.post(self.url, json=self.body)
                except httpx.HTTPError as exc:
                    self._record(None, f"{type(exc).__name__}: {exc}", False)
                    continue
                close = resp.headers.get("connection", "").lower() == "close"
                if resp.status_code != 200:
                    self._record(None, f"HTTP {resp.status_code}: {resp.text[:200]}", close)
                else:
                    self._record(resp.json()["model_version"], None, close)
                time.sleep(0.002)  # a steady stream, not a flood: 2 cores run the pods too
