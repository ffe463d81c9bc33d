"""One process per core: `--workers N` splits the CPUs between the processes, so the
inference threads of all workers together do not oversubscribe the container."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from sklearn.ensemble import RandomForestClassifier

from serving_runtime import save_model
from serving_runtime.server.settings import available_cpus

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_share_the_cpus_and_serve_with_the_fast_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, X[:, 0] > 0)
    save_model(model, tmp_path / "m", version="1")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "INFERENCE_THREADS"}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving_runtime", "--host", "127.0.0.1", "--port", str(port),
         "--models-dir", str(tmp_path), "--workers", "2"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.3)
        r = httpx.post(f"http://127.0.0.1:{port}/predict", timeout=10, json={
            "model_name": "m", "features": {"f0": [1.5], "f1": [0.0], "f2": [0.0]}})
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == model.predict([[1.5, 0.0, 0.0]]).tolist()
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'model_fast_path{model_name="m"} 1.0' in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "server.log").read_text()
    threads = {int(t) for t in re.findall(r'"runtime starting".*?"inference_threads":(\d+)', text)}
    assert threads == {max(1, available_cpus() // 2)}, text[-2000:]
