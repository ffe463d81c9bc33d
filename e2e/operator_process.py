"""`python -m mlmodel_operator` as a host process, shared by the operator and chart e2e tests.

kwok runs no containers, so the e2e suites run the operator on the host under the
kubeconfig they choose (the chart's ServiceAccount token, usually). Health and metrics go to
free loopback ports: the chart's 8080/9090 are container ports and likely taken here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from e2e.helpers import REPO_ROOT, free_port, healthz_ok


class OperatorProcess:
    """One operator subprocess; restartable (`stop()` then `start()`), logs appended to
    one file across restarts."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **env,
            "OPERATOR_HEALTH_PORT": str(self.health_port),
            "OPERATOR_METRICS_PORT": str(self.metrics_port),
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlmodel_operator"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            )
        deadline = time.monotonic() + timeout
        while not healthz_ok(self.health_port):
            if self.proc.poll() is not None:  # fail at once, not after the timeout
                raise AssertionError(
                    f"operator exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"operator not healthy after {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.5)
        return self

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc and self.proc.returncode}")
        return healthz_ok(self.health_port)

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the operator (kopf stops gracefully on SIGTERM); kill it after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def forbidden_lines(self) -> list[str]:
        """Log lines where the API server refused the operator (RBAC). A 403 for writing
        into a namespace that is being deleted (another suite's leftovers, seen by a
        cluster-wide operator) is not a permission problem and is left out."""
        return [
            line for line in self.logs().splitlines()
            if ("Forbidden" in line or "forbidden" in line or " 403" in line
                or "(403)" in line or "Not enough permissions" in line)
            and "because it is being terminated" not in line
        ]
