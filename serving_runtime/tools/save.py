"""`python -m serving_runtime save`: write a model folder from an existing artifact.

Reads an XGBoost JSON/UBJSON file, a skops file, or (only with --trust-pickle, since
unpickling runs code) a joblib/pickle file, and writes it with `save_model` in a safe
format with metadata and sha256."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from serving_runtime.models.folder import save_model
from serving_runtime.models.runtimes.pickle_artifact import PICKLE_EXTENSIONS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "save", help="write a model folder (metadata.json + safe artifact + sha256)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="source", required=True, type=Path,
                   help="fitted model file: .json/.ubj (XGBoost), .skops, or .joblib/.pkl")
    p.add_argument("--dest", required=True, type=Path,
                   help="model folder to write; its name is the model name (DNS-1123 label)")
    p.add_argument("--version", required=True, help="model version string")
    p.add_argument("--feature-names", default=None,
                   help="comma-separated feature names in the model's column order")
    p.add_argument("--sample", type=Path, default=None,
                   help="JSON file with a few input rows ({name: [values]} or [[row], ...]) "
                        "to store as the golden sample")
    p.add_argument("--format", dest="artifact_format", choices=["json", "ubj"], default=None,
                   help="XGBoost artifact format (default json)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow reading a joblib/pickle source (runs code from the file)")


def _read_source(path: Path, trust_pickle: bool) -> Any:
    suffix = path.suffix.lower()
    if suffix in PICKLE_EXTENSIONS:
        if not trust_pickle:
            raise SystemExit(
                f"{path} is a pickle/joblib file; reading it runs code from the file. "
                f"Pass --trust-pickle if you trust its origin."
            )
        import joblib

        return joblib.load(path)
    if suffix == ".skops":
        from serving_runtime.models.runtimes.sklearn_runtime import SklearnRuntime

        return SklearnRuntime.load(path, allow_unsafe=False).estimator
    if suffix in (".json", ".ubj"):
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster
    raise SystemExit(f"{path}: unsupported model file (.json, .ubj, .skops, .joblib, .pkl)")


def run(args: argparse.Namespace) -> int:
    estimator = _read_source(args.source, args.trust_pickle)
    sample = json.loads(args.sample.read_text()) if args.sample else None
    names = args.feature_names.split(",") if args.feature_names else None
    folder = save_model(estimator, args.dest, version=args.version, feature_names=names,
                        sample=sample, artifact_format=args.artifact_format)
    meta = json.loads((folder / "metadata.json").read_text())
    print(json.dumps({"folder": str(folder), "artifact": meta["artifact"],
                      "sha256": meta["sha256"], "task": meta["task"],
                      "feature_names": meta["feature_names"]}))
    return 0
