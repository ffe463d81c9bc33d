"""Train the two reference models of the original benchmark table (same data and seeds as
the shared harness) and lay them out for every server under test:

    OUT/anchor/<name>/   model.joblib or model.json + model-settings.json (MLServer, seed)
    OUT/project/<name>/  a model folder written by serving_runtime.save_model (skops/JSON)

RF-10: RandomForestClassifier(n_estimators=10) on make_classification(1000, 10 features);
XGB-100: XGBClassifier(n_estimators=100) on make_classification(1000, 50 features).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import joblib
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from serving_runtime import save_model


def _anchor(out: Path, name: str, model: Any, n_features: int, fmt: str) -> None:
    d = out / "anchor" / name
    d.mkdir(parents=True, exist_ok=True)
    if fmt == "sklearn":
        joblib.dump(model, d / "model.joblib")
        impl, uri = "mlserver_sklearn.SKLearnModel", "./model.joblib"
    else:
        model.save_model(d / "model.json")
        impl, uri = "mlserver_xgboost.XGBoostModel", "./model.json"
    (d / "model-settings.json").write_text(json.dumps(
        {"name": name, "implementation": impl, "parameters": {"uri": uri, "version": "v1"}}))
    (d / "meta.json").write_text(json.dumps({"n_features": n_features}))


def main(out: Path) -> None:
    X, y = make_classification(n_samples=1000, n_features=10, random_state=0)
    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    X2, y2 = make_classification(n_samples=1000, n_features=50, random_state=0)
    xg = xgb.XGBClassifier(n_estimators=100, random_state=0).fit(X2, y2)
    for name, model, n, fmt in (("rf10", rf, 10, "sklearn"), ("xgb100", xg, 50, "xgboost")):
        _anchor(out, name, model, n, fmt)
        save_model(model, out / "project" / name, version="v1",
                   feature_names=[f"f{i}" for i in range(n)], sample=X[:4] if n == 10 else X2[:4])
    print("models in", out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/n1v1-bench/models"))
