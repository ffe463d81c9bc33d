"""`python -m serving_runtime save`: write a model folder from an existing artifact.

Reads any artifact a framework plug-in reads (an XGBoost JSON/UBJSON file, a skops file,
a LightGBM text model, or - only with --trust-pickle, since unpickling runs code - a
joblib/pickle file), and writes it with `save_model` in a safe format with metadata and
sha256."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from serving_runtime.errors import ModelLoadError
from serving_runtime.models.folder import save_model
from serving_runtime.models.folder_format import artifact_table
from serving_runtime.models.runtimes import framework


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "save", help="write a model folder (metadata.json + safe artifact + sha256)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="source", required=True, type=Path,
                   help="fitted model file: " + ", ".join(sorted(artifact_table())))
    p.add_argument("--framework", default=None,
                   help="the framework that wrote the file, when its suffix is read by "
                        "several (a .joblib file); default: the only one that reads it")
    p.add_argument("--dest", required=True, type=Path,
                   help="model folder to write; its name is the model name")
    p.add_argument("--version", required=True, help="model version string")
    p.add_argument("--feature-names", default=None,
                   help="comma-separated feature names in the model's column order")
    p.add_argument("--sample", type=Path, default=None,
                   help="JSON file with a few input rows ({name: [values]} or [[row], ...]) "
                        "to store as the golden sample")
    p.add_argument("--format", dest="artifact_format", default=None,
                   help="artifact format, if the framework writes several (XGBoost: json "
                        "(default) or ubj)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow reading a joblib/pickle source (runs code from the file)")


def _read_source(path: Path, trust_pickle: bool, framework_name: str | None) -> Any:
    found = artifact_table().get(path.suffix.lower())
    if found is None:
        raise SystemExit(f"{path}: unsupported model file (expected one of "
                         f"{', '.join(sorted(artifact_table()))})")
    kind, readers = found
    if not kind.safe and not trust_pickle:
        raise SystemExit(
            f"{path} is a pickle/joblib file; reading it runs code from the file. "
            f"Pass --trust-pickle if you trust its origin."
        )
    if framework_name is not None and framework_name not in readers:
        raise SystemExit(f"{path}: a {kind.suffix} file is read by {', '.join(readers)}, "
                         f"not {framework_name}")
    name = framework_name or readers[0]
    if not kind.safe:  # pickle: any framework's runtime unpickles the same way
        import joblib

        return joblib.load(path)
    try:
        return framework(name).runtime_class().read_source(path)
    except ModelLoadError as exc:
        raise SystemExit(f"{path}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    estimator = _read_source(args.source, args.trust_pickle, args.framework)
    sample = json.loads(args.sample.read_text()) if args.sample else None
    names = args.feature_names.split(",") if args.feature_names else None
    try:
        folder = save_model(estimator, args.dest, version=args.version, feature_names=names,
                            sample=sample, artifact_format=args.artifact_format)
    except (ValueError, TypeError, ModelLoadError) as exc:  # a bad flag or name: no traceback
        raise SystemExit(f"save: {exc}") from None
    meta = json.loads((folder / "metadata.json").read_text())
    print(json.dumps({"folder": str(folder), "artifact": meta["artifact"],
                      "sha256": meta["sha256"], "task": meta["task"],
                      "feature_names": meta["feature_names"]}))
    return 0
