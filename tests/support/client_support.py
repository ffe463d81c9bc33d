"""Helpers for the client tests: real model folders, a real runtime process on a loopback
port, and a scripted fault server for failures a healthy runtime never produces."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.support.runtime_helpers import RuntimeServer

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def make_models(models_dir: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """Five small real models (sklearn + XGBoost; binary, multi-class, regression) saved
    with the runtime's own save_model. Returns name -> (feature names, sample rows)."""
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from serving_runtime import save_model

    iris_X, iris_y = load_iris(return_X_y=True)
    bc_X, bc_y = load_breast_cancer(return_X_y=True)
    bc_names = [f"f{i}" for i in range(bc_X.shape[1])]
    db_X, db_y = load_diabetes(return_X_y=True)
    db_names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    specs = {
        "sk-iris-rf": (RandomForestClassifier(n_estimators=10, random_state=0),
                       iris_X, iris_y, IRIS_FEATURES),
        "sk-cancer-lr": (LogisticRegression(max_iter=5000), bc_X, bc_y, bc_names),
        "sk-diabetes-gbr": (GradientBoostingRegressor(n_estimators=20, random_state=0),
                            db_X, db_y, db_names),
        "xgb-iris": (xgb.XGBClassifier(n_estimators=10, max_depth=3), iris_X, iris_y,
                     IRIS_FEATURES),
        "xgb-diabetes": (xgb.XGBRegressor(n_estimators=10, max_depth=3), db_X, db_y, db_names),
    }
    out = {}
    for name, (est, X, y, names) in specs.items():
        est.fit(X, y)
        save_model(est, models_dir / name, version="1.0.0", feature_names=names)
        out[name] = (names, X)
    return out


def columns(names: list[str], X: np.ndarray) -> dict[str, list[float]]:
    return {n: X[:, i].tolist() for i, n in enumerate(names)}


@dataclass
class Runtime:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def run_runtime(models_dir: Path, log: Path, *extra: str) -> Iterator[Runtime]:
    """`python -m serving_runtime` in a child process (the runtime tests' RuntimeServer);
    yields once /v2/health/ready is 200, stops it afterwards."""
    srv = RuntimeServer(models_dir, args=["--log-level", "warning", *extra], log_path=log)
    try:
        srv.wait_ready(120)
        yield Runtime(srv.url, srv.proc, log)
    finally:
        srv.stop()


# --- fault server (a fake: only for failures a healthy runtime cannot be made to show) ---


@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


class FaultServer:
    """HTTP/1.1 keep-alive server answering from a script (the last reply repeats)."""

    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.seen.append(Seen(self.path, dict(self.headers), body,
                                       self.client_address))
                idx = min(len(owner.seen), len(owner.script)) - 1
                reply = owner.script[idx]
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle  # noqa: N815 (http.server's naming)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def predict_ok(cid: str = "x") -> dict[str, object]:
    """A well-formed /predict answer for the fault server to give."""
    return {"prediction": [1], "confidence": [0.9], "probabilities": {"class_1": [0.9]},
            "correlation_id": cid, "model_version": "1", "latency_ms": 0.1}
