"""Helpers for the image tests: the docker CLI, containers, ports, HTTP waits.

Everything goes through the real `docker` CLI against the engine that images/engine.sh
started (or any engine the CLI reaches).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from e2e.helpers import REPO_ROOT, STATE_DIR, free_port, run

IMAGES_DIR = REPO_ROOT / "images"
MEASUREMENTS = STATE_DIR / "images" / "measurements.json"
# Every container the tests start carries this label: `docker rm -f $(docker ps -aq -f label=...)`.
LABEL = "n1v1.io/e2e-images=true"
VERSION = "0.1.0"
RUNTIME_IMAGE = os.environ.get("RUNTIME_IMAGE", f"n1v1-ml-serving:{VERSION}")
OPERATOR_IMAGE = os.environ.get("OPERATOR_IMAGE", f"n1v1-mlmodel-operator:{VERSION}")
APP_UID = 10001


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return run(["docker", *args], check=check, timeout=timeout)


def inspect(obj: str) -> dict[str, Any]:
    return json.loads(docker("inspect", obj).stdout)[0]


def logs(container: str) -> str:
    out = docker("logs", "--tail", "200", container, check=False)
    return (out.stdout + out.stderr)[-6000:]


def host_port(container: str, port: int) -> int:
    """The loopback port docker published for the container's `port`."""
    out = docker("port", container, f"{port}/tcp").stdout.split()[0]
    return int(out.rsplit(":", 1)[1])


def is_running(container: str) -> bool:
    return bool(inspect(container)["State"]["Running"])


def wait_http_ok(
    url: str, container: str, timeout: float = 120, interval: float = 0.05
) -> float:
    """Poll `url` until it answers 200; returns the monotonic time it did.

    Fails early (with the container's logs) if the container exits while waiting.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    checked = time.monotonic()
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            last = f"{r.status_code} {r.text[:300]}"
            if r.status_code == 200:
                return time.monotonic()
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() - checked > 1:  # `docker inspect` is slow; not on every poll
            checked = time.monotonic()
            if not is_running(container):
                raise AssertionError(
                    f"container exited before {url} answered 200 (last: {last})\n"
                    f"--- logs ---\n{logs(container)}"
                )
        time.sleep(interval)
    raise AssertionError(
        f"{url} did not answer 200 within {timeout}s (last: {last})\n--- logs ---\n"
        f"{logs(container)}"
    )


def wait_exited(container: str, timeout: float) -> dict[str, Any]:
    """Wait until the container stops; returns its State."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = inspect(container)["State"]
        if not state["Running"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"container still running after {timeout}s\n{logs(container)}")


def record(key: str, value: Any) -> None:
    """Merge one measurement into e2e/.state/images/measurements.json (shown by conftest)."""
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(MEASUREMENTS.read_text()) if MEASUREMENTS.exists() else {}
    data[key] = value
    MEASUREMENTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def image_size_mb(image: str) -> float:
    return round(inspect(image)["Size"] / 1e6, 1)


def readable_by_app(path: Path) -> None:
    """Make a host folder tree readable (and folders traversable) by the container's UID."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


__all__ = [
    "APP_UID",
    "IMAGES_DIR",
    "LABEL",
    "OPERATOR_IMAGE",
    "RUNTIME_IMAGE",
    "docker",
    "free_port",
    "host_port",
    "image_size_mb",
    "inspect",
    "is_running",
    "logs",
    "readable_by_app",
    "record",
    "wait_exited",
    "wait_http_ok",
]
