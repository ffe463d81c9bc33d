"""Helpers shared by the server, model, client and battery tests (`from
tests.support.runtime_helpers import ...`; fixtures live in tests/support/fixtures.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def columns(X: np.ndarray, names: list[str] | None = None) -> dict[str, list[float]]:
    """A (rows, features) matrix as the /predict `features` object (columns by name)."""
    names = names or [f"f{i}" for i in range(X.shape[1])]
    return {n: X[:, i].tolist() for i, n in enumerate(names)}


class RuntimeServer:
    """One `python -m serving_runtime` process; stopped by its own pid."""

    def __init__(self, models_dir: Path, *, env: dict[str, str] | None = None,
                 args: list[str] | None = None, log_path: Path | None = None,
                 grpc: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or models_dir.parent / f"server-{self.port}.log"
        # The test decides these; the client's REMOTE_INFERENCE_* must not leak in either.
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("ALLOW_UNSAFE_LOADING", "PRELOAD_MODELS", "MODELS_DIR")
                    and not k.startswith("REMOTE_INFERENCE")}
        full_env.update(env or {})
        # tests/conftest.py turns gRPC off (GRPC_PORT=0); grpc=True gives it a free port
        self.grpc_address: str | None = None
        if grpc:
            grpc_port = free_port()
            full_env["GRPC_PORT"] = str(grpc_port)
            self.grpc_address = f"127.0.0.1:{grpc_port}"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving_runtime", "--models-dir", str(models_dir),
             "--host", "127.0.0.1", "--port", str(self.port), *(args or [])],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_live(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.logs()}")
            try:
                if self.client.get("/v2/health/live").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not live after {timeout}s: {self.logs()}")

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until /v2/health/ready answers 200 (every expected model serves)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.logs()}")
            try:
                if self.client.get("/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready after {timeout}s: {self.logs()}")
            time.sleep(0.2)

    def wait_startup_done(self, timeout: float = 60) -> dict:
        """Wait until the initial loading finished (ready or not); return /health."""
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.client.get("/health").json()
            if "loading models" not in doc["reasons"]:
                return doc
            time.sleep(0.1)
        raise TimeoutError(f"models still loading after {timeout}s")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
