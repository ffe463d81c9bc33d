"""Train the reference models of the benchmark table (same data and seeds as the shared
harness) and lay them out for every server under test:

    OUT/anchor/<name>/   model.joblib, model.json or model.bst + model-settings.json
                         (MLServer; the seed reads model.joblib or model.json)
    OUT/project/<name>/  a model folder written by serving_runtime.save_model (skops/JSON/
                         LightGBM text)

RF-10: RandomForestClassifier(n_estimators=10) on make_classification(1000, 10 features);
XGB-100: XGBClassifier(n_estimators=100) on make_classification(1000, 50 features);
LGBM-100: LGBMClassifier(n_estimators=100, num_leaves=31), binary, on the XGB-100 data.

For lgbm100 MLServer's runtime (mlserver_lightgbm.LightGBMModel) loads a Booster from the
uri in model-settings.json (well-known name model.bst): model.bst is a byte-for-byte copy of
the project folder's model.txt, so both servers predict with the same trees. The seed reads
the same classifier from model.joblib (it knows nothing else).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
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
    elif fmt == "xgboost":
        model.save_model(d / "model.json")
        impl, uri = "mlserver_xgboost.XGBoostModel", "./model.json"
    else:  # lightgbm: the project's own model file, as MLServer's well-known model.bst
        shutil.copyfile(out / "project" / name / "model.txt", d / "model.bst")
        joblib.dump(model, d / "model.joblib")  # for the seed only
        impl, uri = "mlserver_lightgbm.LightGBMModel", "./model.bst"
    (d / "model-settings.json").write_text(json.dumps(
        {"name": name, "implementation": impl, "parameters": {"uri": uri, "version": "v1"}}))
    (d / "meta.json").write_text(json.dumps({"n_features": n_features, "format": fmt}))


def main(out: Path) -> None:
    X, y = make_classification(n_samples=1000, n_features=10, random_state=0)
    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    X2, y2 = make_classification(n_samples=1000, n_features=50, random_state=0)
    xg = xgb.XGBClassifier(n_estimators=100, random_state=0).fit(X2, y2)
    lg = lgb.LGBMClassifier(n_estimators=100, num_leaves=31, random_state=0,
                            verbose=-1).fit(X2, y2)
    for name, model, data, fmt in (("rf10", rf, X, "sklearn"), ("xgb100", xg, X2, "xgboost"),
                                   ("lgbm100", lg, X2, "lightgbm")):
        n = data.shape[1]
        save_model(model, out / "project" / name, version="v1",
                   feature_names=[f"f{i}" for i in range(n)], sample=data[:4])
        _anchor(out, name, model, n, fmt)
    print("models in", out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/n1v1-bench/models"))
