"""In-process cost of one `/predict` through the hot path (no sockets, no HTTP parsing):
`create_app` + `HotPathApp`, an RF-10 forest, the best of 5 rounds of 5,000 calls.

    .venv/bin/python bench/hot_path_cost.py [--token]

`--token`: with AUTH_TOKENS_DIR set and the request carrying its bearer token (what the
check costs per request).

Compare two trees in one sitting (`PYTHONPATH=<tree> ...`, alternating): the machine's
speed drifts, so only figures of one run compare.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.ensemble import RandomForestClassifier

from serving_runtime import save_model
from serving_runtime.server.app import create_app
from serving_runtime.server.hot_path import HotPathApp
from serving_runtime.server.settings import Settings

ROUNDS, CALLS = 5, 5000


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 10))
    y = (X[:, 0] > 0).astype(int)
    models = Path(tempfile.mkdtemp(prefix="n1v1-hot-path-"))
    forest = RandomForestClassifier(10, max_depth=8, random_state=0).fit(X, y)
    save_model(forest, models / "m", version="1")
    token = "--token" in sys.argv[1:]
    headers = [(b"content-length", b"")]
    extra: dict[str, Any] = {}
    if token:
        (models.parent / (models.name + "-tokens")).mkdir()
        (models.parent / (models.name + "-tokens") / "engine").write_text("t" * 32)
        extra["auth_tokens_dir"] = models.parent / (models.name + "-tokens")
        headers.append((b"authorization", b"Bearer " + b"t" * 32))
    app = create_app(Settings(models_dir=models, **extra))
    asyncio.run(app.state.registry.load_expected())
    hot = HotPathApp(app, shed_lag_s=0)
    body = orjson.dumps({"model_name": "m",
                         "features": {f"f{i}": [float(X[0, i])] for i in range(10)}})
    headers[0] = (b"content-length", str(len(body)).encode())
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    answers: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answers.append(message["status"])

    async def run() -> float:
        best = float("inf")
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for _ in range(CALLS):
                await hot(scope, receive, send)
            best = min(best, (time.perf_counter() - t0) / CALLS)
        if hot._probe is not None:
            hot._probe.cancel()
        return best

    best = asyncio.run(run())
    assert set(answers) == {200}, sorted(set(answers))
    print(f"hot path: {best * 1e6:.1f} us per /predict in process "
          f"(best of {ROUNDS} x {CALLS}, RF-10{', bearer token checked' if token else ''})")


if __name__ == "__main__":
    main()
