"""Real model folders, archives and row sets for the real-pod tests."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from e2e.helpers import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def example(name: str) -> list[dict[str, Any]]:
    """The documents of examples/<name>."""
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sklearn_folder(models_dir: Path, name: str, version: str) -> tuple[Path, list[str]]:
    """A fitted RandomForest saved as a model folder (skops artifact, golden sample)."""
    from sklearn.ensemble import RandomForestClassifier

    from serving_runtime import save_model

    rng = np.random.default_rng(7)
    names = ["amount", "age_days", "merchant_risk", "velocity"]
    X = rng.normal(size=(600, len(names)))
    y = (X[:, 0] + 0.5 * X[:, 2] - X[:, 3] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(X, y)
    folder = save_model(model, models_dir / name, version=version, feature_names=names,
                        sample=X[:5])
    return folder, names


def tar_folder(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


def escaping_archive(out: Path) -> Path:
    """A .tar.gz whose member climbs out of the destination: fetch must refuse it."""
    with tarfile.open(out, "w:gz") as tar:
        data = b"not a model"
        info = tarfile.TarInfo("../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out


def rows(names: list[str], n: int, seed: int = 1) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=1.5, size=(n, len(names)))
    return {name: X[:, i].tolist() for i, name in enumerate(names)}


def configmap_folder(configmap: dict[str, Any], models_dir: Path, name: str) -> Path:
    """The model folder a ConfigMap holds, written to disk for the client's local mode."""
    folder = models_dir / name
    folder.mkdir(parents=True)
    for key, text in configmap["data"].items():
        (folder / key).write_text(text)
    return folder


def xgboost_folder(models_dir: Path, name: str, version: str) -> tuple[Path, list[str]]:
    """A fitted 20-tree XGBoost classifier saved as a model folder (UBJSON artifact)."""
    import xgboost as xgb

    from serving_runtime import save_model

    rng = np.random.default_rng(11)
    names = ["bid", "ask", "depth", "imbalance", "vol_1m"]
    X = rng.normal(size=(800, len(names)))
    y = (X[:, 0] - X[:, 1] + 0.3 * X[:, 3] > 0).astype(int)
    model = xgb.XGBClassifier(n_estimators=20, max_depth=4).fit(X, y)
    folder = save_model(model, models_dir / name, version=version, feature_names=names,
                        sample=X[:5], artifact_format="ubj")
    return folder, names


def lightgbm_folder(models_dir: Path, name: str, version: str) -> tuple[Path, list[str]]:
    """A fitted 30-tree LightGBM classifier with string labels, saved as a model folder
    (LightGBM's text model file, labels in metadata.json)."""
    import lightgbm as lgb

    from serving_runtime import save_model

    rng = np.random.default_rng(12)
    names = ["bid", "ask", "depth", "imbalance", "vol_1m"]
    X = rng.normal(size=(800, len(names)))
    y = np.where(X[:, 0] - X[:, 1] + 0.3 * X[:, 3] > 0, "buy", "sell")
    model = lgb.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1).fit(X, y)
    folder = save_model(model, models_dir / name, version=version, feature_names=names,
                        sample=X[:5])
    return folder, names


def slow_forest_folder(models_dir: Path, name: str, version: str) -> tuple[Path, list[str]]:
    """A model that is slow for real: 150 deep trees through scikit-learn's own predict
    (the MLModel turns the compiled fast path off), about 20 ms per request of 200 rows on
    one core, so a few connections on half a core push its p95 far past 25 ms."""
    from sklearn.ensemble import RandomForestRegressor

    from serving_runtime import save_model

    rng = np.random.default_rng(11)
    names = [f"f{i}" for i in range(8)]
    X = rng.normal(size=(2000, len(names)))
    y = X[:, 0] * 2 + np.sin(X[:, 1]) + rng.normal(scale=0.1, size=len(X))
    model = RandomForestRegressor(n_estimators=150, max_depth=10, random_state=0,
                                  n_jobs=1).fit(X, y)
    folder = save_model(model, models_dir / name, version=version, feature_names=names,
                        sample=X[:5])
    return folder, names


# --- examples/xgboost-configmap.yaml (tiny-xgb), the rollout tests' model ----------------

ROW = {"features": {"spread": [0.1], "momentum": [0.2], "volume": [0.3], "volatility": [0.4]}}


def versioned_configmap(base: dict, name: str, version: str, *, break_sample: bool = False):
    """The tiny-xgb model folder as ConfigMap `name`, at `version`; with break_sample the
    golden sample's expected answer is wrong, so the runtime refuses to serve it."""
    cm = copy.deepcopy(base)
    cm["metadata"]["name"] = name
    meta = json.loads(cm["data"]["metadata.json"])
    meta["version"] = version
    cm["data"]["metadata.json"] = json.dumps(meta, indent=2)
    if break_sample:
        sample = json.loads(cm["data"]["sample.json"])
        sample["expected"]["prediction"] = [1 - p for p in sample["expected"]["prediction"]]
        sample["expected"]["probabilities"] = {
            k: [1.0 - p for p in v] for k, v in sample["expected"]["probabilities"].items()}
        cm["data"]["sample.json"] = json.dumps(sample)
    return cm


def body() -> dict:
    return {"model_name": "tiny-xgb", **ROW}
