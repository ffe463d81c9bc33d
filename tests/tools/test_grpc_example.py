"""examples/grpc/predict.py (shown in docs/grpc.md) against a real server: the three ways
print the same labels and probabilities, and the engine's client the local answer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from serving_runtime import save_model
from serving_runtime.client import InferenceClient
from tests.support.runtime_helpers import REPO, RuntimeServer

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_grpc_example_prints_one_answer_three_ways(tmp_path):
    iris = load_iris()
    clf = RandomForestClassifier(n_estimators=20, random_state=0).fit(iris.data, iris.target)
    save_model(clf, tmp_path / "models" / "iris", version="1.0.0", feature_names=NAMES,
               sample=iris.data[::50])
    srv = RuntimeServer(tmp_path / "models", grpc=True, log_path=tmp_path / "server.log")
    try:
        srv.wait_ready()
        done = subprocess.run(
            [sys.executable, "examples/grpc/predict.py", "--http", srv.url,
             "--grpc", str(srv.grpc_address), "--model", "iris", "--rows", "3"],
            cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        srv.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    X = np.random.default_rng(0).normal(size=(3, 4)).round(3)
    labels = clf.predict(X).tolist()
    proba = clf.predict_proba(X).tolist()
    assert f"tritonclient  predict: {[[v] for v in labels]}\n" in out
    assert f"tritonclient  predict_proba: {proba}\n" in out
    assert f"REST V2       predict: {labels}\n" in out
    assert f"REST V2       predict_proba: {sum(proba, [])}\n" in out
    (engine_line,) = [x for x in out.splitlines() if x.startswith("engine client ")]
    engine = json.loads(engine_line.removeprefix("engine client "))
    local = InferenceClient(remote=False, models_dir=tmp_path / "models").predict(
        "iris", {n: X[:, i] for i, n in enumerate(NAMES)}, correlation_id="example-2")
    local.pop("latency_ms")
    assert engine == local
