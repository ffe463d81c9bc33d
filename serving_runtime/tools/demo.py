"""`make demo`: train a small scikit-learn, XGBoost and LightGBM model into a temporary
models directory, serve them on 127.0.0.1:8000, and print curl commands that work as
printed (the demo sends the same requests itself before printing them).

    python -m serving_runtime.tools.demo [--port 8000]
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"


def train(models_dir: Path) -> dict[str, dict]:
    """Three models and one example request body for each."""
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
    from sklearn.ensemble import RandomForestClassifier

    from serving_runtime import save_model

    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rf = RandomForestClassifier(n_estimators=20, random_state=0).fit(iris.data, iris.target)
    save_model(rf, models_dir / "iris", version="1.0.0", feature_names=names,
               sample=iris.data[::30])

    bc = load_breast_cancer()
    bc_names = [n.replace(" ", "_") for n in bc.feature_names]
    booster = xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(bc.data, bc.target)
    save_model(booster, models_dir / "breast-cancer", version="1.0.0",
               feature_names=bc_names, sample=bc.data[::100])

    # LightGBM, under a name as teams write them (the original design document's)
    diabetes = load_diabetes()
    lgbm = lgb.LGBMRegressor(n_estimators=40, num_leaves=15, verbose=-1).fit(
        diabetes.data, diabetes.target)
    save_model(lgbm, models_dir / "your_model", version="1.0.0",
               feature_names=list(diabetes.feature_names), sample=diabetes.data[::100])

    return {
        "your_model": {"model_name": "your_model",
                       "features": {n: [float(diabetes.data[0, i])]
                                    for i, n in enumerate(diabetes.feature_names)}},
        "iris": {"model_name": "iris", "correlation_id": "demo-1",
                 "features": {n: [float(v) for v in iris.data[[0, 100], i]]
                              for i, n in enumerate(names)}},
        "breast-cancer": {"model_name": "breast-cancer",
                          "features": {n: [float(bc.data[0, i])]
                                       for i, n in enumerate(bc_names)}},
    }


def curl(port: int, path: str, body: dict | None = None) -> str:
    url = f"http://{HOST}:{port}{path}"
    if body is None:
        return f"curl -s {url}"
    return (f"curl -s -X POST {url} -H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body, separators=(',', ':')))}")


def announce_when_ready(port: int, bodies: dict[str, dict]) -> None:
    import httpx

    base = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v2/health/ready", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        print("demo: the server did not become ready within 120 s", file=sys.stderr)
        return
    iris = bodies["iris"]
    answer = httpx.post(base + "/predict", json=iris, timeout=10)
    print("\nServing models 'iris' (scikit-learn), 'breast-cancer' (XGBoost) and 'your_model' "
          "(LightGBM). Try:\n")
    print("  " + curl(port, "/predict", iris))
    print(f"\n  -> {answer.status_code} {answer.text}\n")
    print("  " + curl(port, "/predict", bodies["breast-cancer"]))
    print("  " + curl(port, "/predict", bodies["your_model"]))
    v2 = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                      "data": [5.1, 3.5, 1.4, 0.2]}],
          "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
    print("  " + curl(port, "/v2/models/iris/infer", v2))
    print("  " + curl(port, "/health"))
    print(f"\n  API docs: http://{HOST}:{port}/docs    metrics: http://{HOST}:{port}/metrics")
    print("  Ctrl+C stops the server.\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving_runtime.tools.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    with socket.socket() as s:
        try:
            s.bind((HOST, args.port))
        except OSError:
            print(f"demo: port {args.port} on {HOST} is in use; pass --port N "
                  f"(.venv/bin/python -m serving_runtime.tools.demo --port 8001)", file=sys.stderr)
            return 1

    import uvicorn

    from serving_runtime.server.app import create_app
    from serving_runtime.server.settings import Settings

    with tempfile.TemporaryDirectory(prefix="n1v1-demo-") as tmp:
        models_dir = Path(tmp) / "models"
        print(f"demo: training three small models into {models_dir} ...", flush=True)
        bodies = train(models_dir)
        settings = Settings(models_dir=models_dir, host=HOST, port=args.port,
                            log_level="warning")
        threading.Thread(target=announce_when_ready, args=(args.port, bodies),
                         daemon=True).start()
        uvicorn.run(create_app(settings), host=HOST, port=args.port, log_config=None,
                    access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
