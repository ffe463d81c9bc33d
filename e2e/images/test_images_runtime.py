"""The n1v1-ml-serving image, run for real: serving, hardening, the fetch entry point and
graceful shutdown. Each test fails on a broken image (wrong entrypoint, root user, a
shell-form entrypoint that swallows SIGTERM, missing packages)."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from e2e.helpers import wait_for
from e2e.images.imagelib import (
    APP_UID,
    docker,
    host_port,
    inspect,
    logs,
    record,
    wait_exited,
    wait_http_ok,
)

# The first test may build the images from nothing (base image, wheels, both builds).
pytestmark = pytest.mark.timeout(1800)

# Hardened the way the chart and the operator run it: read-only root, /tmp on tmpfs,
# no capabilities, no privilege escalation; models mounted read-only.
HARDENED = (
    "--read-only", "--tmpfs", "/tmp:rw,size=64m",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
)


def _started_at(container: str) -> float:
    """Engine's StartedAt (RFC 3339, nanoseconds) as a POSIX timestamp."""
    raw = inspect(container)["State"]["StartedAt"]
    head, _, frac = raw.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def _serve(start_container, image: str, models: Path, *extra: str) -> tuple[str, str]:
    cid = start_container(
        image, *HARDENED, "-v", f"{models}:/app/models:ro", "-p", "127.0.0.1::8000", *extra
    )
    return cid, f"http://127.0.0.1:{host_port(cid, 8000)}"


def test_runtime_image_config(images) -> None:
    cfg = inspect(images.runtime)["Config"]
    assert cfg["User"] == f"{APP_UID}:{APP_UID}"
    assert cfg["Entrypoint"] == ["python", "-m", "serving_runtime"]
    assert "8000/tcp" in cfg["ExposedPorts"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == "n1v1-ml-serving"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert "MODELS_DIR=/app/models" in cfg["Env"]


def test_runtime_serves_demo_models_read_only_as_non_root(
    images, demo_models, start_container
) -> None:
    t_run = time.time()
    cid, base = _serve(start_container, images.runtime, demo_models.folder)
    ready_at = wait_http_ok(f"{base}/v2/health/ready", cid, timeout=120)
    ready_wall = time.time() - (time.monotonic() - ready_at)
    # Cold start: the engine's "container started" to the first 200 from the ready probe
    # (two models loaded and golden-checked); the docker-run figure adds the engine's own work.
    record("runtime_cold_start_s", round(ready_wall - _started_at(cid), 2))
    record("runtime_docker_run_to_ready_s", round(ready_wall - t_run, 2))

    health = httpx.get(f"{base}/health", timeout=10)
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "healthy", body
    assert sorted(body["models_loaded"]) == sorted(demo_models.expected), body

    for name, expected in demo_models.expected.items():
        r = httpx.post(
            f"{base}/predict",
            json={"model_name": name, "features": demo_models.features()},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert [str(p) for p in r.json()["prediction"]] == [str(p) for p in expected], r.text
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200

    # Non-root, numeric: the running process and the image's configured user.
    assert docker("exec", cid, "id", "-u").stdout.strip() == str(APP_UID)
    assert docker("exec", cid, "id", "-g").stdout.strip() == str(APP_UID)
    state = inspect(cid)
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    # The root file system really refuses writes; /tmp (tmpfs) takes them.
    denied = docker("exec", cid, "sh", "-c", "echo x > /app/probe", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    docker("exec", cid, "sh", "-c", "echo x > /tmp/probe")
    # Exec-form entrypoint: python itself is PID 1, so SIGTERM reaches the server.
    cmdline = docker("exec", cid, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[:3] == ["python", "-m", "serving_runtime"], cmdline


def test_runtime_image_fetch_entrypoint_as_init_container(
    images, demo_models, tmp_path
) -> None:
    """The operator runs the same image with `python -m serving_runtime.tools.fetch` to fill an
    emptyDir at /app/models; here the emptyDir is a host folder owned by UID 10001."""
    dest = tmp_path / "models"
    dest.mkdir()
    os.chown(dest, APP_UID, APP_UID)
    out = docker(
        "run", "--rm", *HARDENED,
        "-v", f"{demo_models.folder}:/mnt/model-source:ro",
        "-v", f"{dest}:/app/models",
        "--entrypoint", "python", images.runtime,
        "-m", "serving_runtime.tools.fetch",
        "--uri", "file:///mnt/model-source/demo-sklearn",
        "--dest", "/app/models", "--name", "fetched", "--framework", "sklearn",
        "--version", "1.0.0",
        timeout=120,
    )
    fetched = dest / "fetched"
    meta = json.loads((fetched / "metadata.json").read_text())
    assert meta["framework"] == "sklearn", (meta, out.stdout, out.stderr)
    assert (fetched / meta["artifact"]).read_bytes() == (
        demo_models.folder / "demo-sklearn" / meta["artifact"]
    ).read_bytes()
    assert fetched.stat().st_uid == APP_UID  # written by the non-root user


def _slow_request(base: str, body: bytes, sent_half: threading.Event,
                  go: threading.Event, results: list, i: int) -> None:
    """POST /predict in two halves: the request is on the server (headers parsed, body
    half read) when SIGTERM arrives, and its second half is sent only afterwards."""
    host, port = base.removeprefix("http://").split(":")
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body[: len(body) // 2])
        sent_half.set()
        go.wait(60)
        conn.send(body[len(body) // 2:])
        resp = conn.getresponse()
        results[i] = (resp.status, resp.read().decode())
    except Exception as exc:  # noqa: BLE001 - any failure is the test's finding
        results[i] = ("error", repr(exc))
        sent_half.set()


def _in_flight(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("inference_requests_in_flight"))


def test_runtime_sigterm_drains_in_flight_requests(images, demo_models, start_container) -> None:
    cid, base = _serve(start_container, images.runtime, demo_models.folder)
    wait_http_ok(f"{base}/v2/health/ready", cid, timeout=120)
    body = json.dumps(
        {"model_name": "demo-sklearn", "features": demo_models.features()}
    ).encode()
    n = 8  # bounded load: 8 requests in flight at once
    results: list = [None] * n
    halves = [threading.Event() for _ in range(n)]
    go = threading.Event()
    threads = [
        threading.Thread(target=_slow_request, args=(base, body, halves[i], go, results, i))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for e in halves:
        assert e.wait(30), "client could not start its request"
    # All n are inside the server's handler (the gauge counts them), waiting for their body.
    wait_for(lambda: _in_flight(base) >= n, timeout=30,
             describe=f"{n} requests in flight", observe=lambda: results)

    t_term = time.monotonic()
    docker("kill", "--signal", "TERM", cid)
    time.sleep(1.0)  # the server is now shutting down with 8 requests half-received
    assert inspect(cid)["State"]["Running"], f"exited before draining:\n{logs(cid)}"
    go.set()
    for t in threads:
        t.join(60)
    # 30 s: Kubernetes' default terminationGracePeriodSeconds.
    state = wait_exited(cid, timeout=30)
    drain_s = time.monotonic() - t_term
    record("runtime_sigterm_to_exit_s", round(drain_s, 2))

    failed = [r for r in results if r is None or r[0] != 200]
    assert not failed, f"in-flight requests failed: {failed}\n{logs(cid)}"
    preds = [json.loads(r[1])["prediction"] for r in results]
    assert all(len(p) == len(demo_models.rows) for p in preds)
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, logs(cid))
    assert drain_s < 30


def test_runtime_two_workers_read_only(images, demo_models, start_container) -> None:
    """WORKERS=2 (the documented fast setting on 2 cores) keeps its multiprocess state in
    /tmp: it must work with a read-only root and stop cleanly on SIGTERM."""
    cid, base = _serve(start_container, images.runtime, demo_models.folder, "-e", "WORKERS=2")
    wait_http_ok(f"{base}/v2/health/ready", cid, timeout=120)
    with httpx.Client(timeout=10) as client:
        for _ in range(20):  # new connections spread over both workers
            for name, expected in demo_models.expected.items():
                r = client.post(f"{base}/predict", headers={"Connection": "close"},
                                json={"model_name": name, "features": demo_models.features()})
                assert r.status_code == 200, r.text
                assert [str(p) for p in r.json()["prediction"]] == [str(p) for p in expected]
    top = docker("top", cid, "-o", "pid,user,args").stdout
    workers = [line for line in top.splitlines() if "multiprocessing-fork" in line]
    assert len(workers) == 2, top
    users = {line.split()[1] for line in top.splitlines()[1:]}
    assert users == {str(APP_UID)}, top  # supervisor and workers alike
    docker("kill", "--signal", "TERM", cid)
    state = wait_exited(cid, timeout=30)
    assert state["ExitCode"] == 0, (state, logs(cid))
