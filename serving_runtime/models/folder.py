"""The model folder's two entry points, `save_model` and `load_model`.

The format itself (file names, the artifact table, the metadata schema, sha256, name
rules) is defined in `folder_format.py`; the frameworks are plug-ins
(`serving_runtime.models.runtimes`). Only `framework` and `version` are required in
metadata.json (a bare artifact fetched by `serving_runtime.tools.fetch` gets just those
and its sha256); everything else is read from the artifact.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving_runtime.errors import InvalidInputError, ModelLoadError, PayloadTooLargeError
from serving_runtime.models.features import columns_to_matrix
from serving_runtime.models.folder_format import (
    DEFAULT_MAX_ARTIFACT_BYTES,
    FORMAT_VERSION,
    MAX_SAMPLE_BYTES,
    METADATA_FILE,
    SAMPLE_FILE,
    check_sha256,
    find_artifact_name,
    model_name_problem,
    parse_folder_json,
    read_folder_file,
    read_metadata,
    sha256_hex,
    validate_model_name,
)
from serving_runtime.models.runtimes import framework_of, runtime_class
from serving_runtime.models.runtimes.base import (
    MAX_FEATURES,
    Explanation,
    ModelRuntime,
    NotExplainable,
)
from serving_runtime.models.runtimes.native_errors import clean_native_error
from serving_runtime.models.trees.accelerate import CHECK_ROWS, FastPathStatus, accelerate

__all__ = ["DEFAULT_MAX_ARTIFACT_BYTES", "LoadedModel", "check_model", "load_model",
           "save_model"]



# Values (rows x (features + 1) x outputs) one explanation may answer: its JSON is ~20
# bytes a value, and a body within MAX_BODY_BYTES could otherwise ask for gigabytes.
MAX_EXPLAIN_VALUES = 2_000_000


@dataclass(frozen=True, slots=True, eq=False)
class LoadedModel:
    """A model ready to serve. Immutable: a reload builds a new one and swaps it in, so a
    request that holds a reference always sees one consistent model."""

    name: str
    version: str
    framework: str
    task: str
    feature_names: tuple[str, ...]
    classes: tuple[Any, ...] | None
    runtime: ModelRuntime
    folder: Path
    artifact: str
    sha256: str
    metadata: Mapping[str, Any]
    loaded_at: float = field(default_factory=time.time)
    #: whether the compiled evaluator serves this model (serving_runtime.models.trees)
    fast_path: FastPathStatus | None = None
    feature_index: Mapping[str, int] = field(init=False)
    #: `class_<label>` keys of the probabilities object, in probability-column order
    class_keys: tuple[str, ...] | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_index", {n: i for i, n in enumerate(self.feature_names)})
        keys = tuple(f"class_{c}" for c in self.classes) if self.classes is not None else None
        object.__setattr__(self, "class_keys", keys)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def has_proba(self) -> bool:
        return self.runtime.has_proba

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None) for a validated (rows, n_features) matrix."""
        return self.runtime.predict(X)

    def explain(self, X: np.ndarray) -> Explanation:
        """Exact TreeSHAP of a validated matrix; InvalidInputError (422) for a model
        without trees, naming it; PayloadTooLargeError (413) beyond MAX_EXPLAIN_VALUES."""
        outputs = len(self.classes) if self.classes else 1
        values = X.shape[0] * (X.shape[1] + 1) * outputs
        if values > MAX_EXPLAIN_VALUES:
            raise PayloadTooLargeError(
                f"an explanation of {X.shape[0]} rows x {X.shape[1]} features x {outputs} "
                f"outputs is {values} values; at most {MAX_EXPLAIN_VALUES} per request: "
                f"send fewer rows")
        try:
            return self.runtime.explain(X)
        except NotExplainable as exc:
            raise InvalidInputError(f"model {self.name} cannot be explained: {exc}") from None


def load_model(
    folder: str | os.PathLike[str],
    *,
    allow_unsafe: bool = False,
    threads: int | None = None,
    check: bool = True,
    fast_path: bool = True,
    fast_path_check_rows: int = CHECK_ROWS,
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
) -> LoadedModel:
    """Load and check one model folder.

    Every file is read through `read_folder_file` (inside the folder, a regular file,
    within its size limit - the artifact's is `max_artifact_bytes`, MAX_ARTIFACT_BYTES -
    checked before reading). Verifies the artifact's sha256 (when metadata has one) before
    deserialising those same bytes; refuses pickle/joblib unless `allow_unsafe` (a folder's
    own `"allow_unsafe"` is not honoured: a hostile folder would opt itself in); with
    `check`, predicts sample.json's input and compares with its expected output (or,
    without a sample, predicts one row of zeros). `fast_path` puts the
    compiled evaluator in front when it agrees with the framework on `fast_path_check_rows`
    random rows. Raises ModelLoadError (or a subclass) on failure.
    """
    folder = Path(folder)
    name = folder.name
    problem = model_name_problem(name)
    if problem is not None:
        raise ModelLoadError(f"folder name {name!r} cannot name a model: {problem}")
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    meta = read_metadata(folder)
    # every entry: a FIFO, a folder or a link out of the folder under the artifact's name is
    # refused by read_folder_file with its reason, not skipped as if absent
    artifact = folder / find_artifact_name((p.name for p in folder.iterdir()), meta,
                                           str(folder))
    data = read_folder_file(folder, artifact.name, limit=max_artifact_bytes,
                            limit_name="MAX_ARTIFACT_BYTES")
    digest = sha256_hex(data)
    check_sha256(artifact.name, digest, meta.get("sha256"), METADATA_FILE)
    # Only the caller (the server's ALLOW_UNSAFE_LOADING) may allow pickle: a folder's own
    # "allow_unsafe" would let a hostile folder opt itself in, so it is not honoured.
    runtime = runtime_class(str(meta["framework"])).load(
        artifact, allow_unsafe=allow_unsafe, threads=threads, data=data,
        max_bytes=max_artifact_bytes,
    )
    del data  # the artifact's bytes are not needed once deserialised
    if runtime.n_features > MAX_FEATURES:  # the checks below build rows x features matrices
        raise ModelLoadError(f"{artifact.name}: the model takes {runtime.n_features} "
                             f"features; at most {MAX_FEATURES} are supported")
    if meta.get("classes") is not None:  # a file that stores only class indexes (LightGBM)
        runtime.adopt_classes(meta["classes"])
    # compiled evaluator, self-checked against the framework; falls back on disagreement
    runtime, fast_status = accelerate(runtime, model_name=name, enabled=fast_path,
                                      check_rows=fast_path_check_rows)

    feature_names = _feature_names(meta, runtime)
    task = meta.get("task")
    if task is not None and task != runtime.task:
        raise ModelLoadError(
            f"metadata says task {task!r} but the artifact is a {runtime.task} model"
        )
    if meta.get("classes") is not None and runtime.classes is None:
        raise ModelLoadError(f"metadata lists classes {meta['classes'][:10]} but the artifact "
                             f"is a {runtime.task} model")
    if meta.get("classes") is not None and runtime.classes is not None and [
        str(c) for c in meta["classes"]
    ] != [str(c) for c in runtime.classes]:
        raise ModelLoadError(
            f"metadata classes {meta['classes']} differ from the artifact's {list(runtime.classes)}"
        )
    model = LoadedModel(
        name=name,
        version=str(meta["version"]),
        framework=runtime.framework,
        task=runtime.task,
        feature_names=feature_names,
        classes=runtime.classes,
        runtime=runtime,
        folder=folder,
        artifact=artifact.name,
        sha256=digest,
        metadata=meta,
        fast_path=fast_status,
    )
    if check:
        check_model(model)
    return model


def _feature_names(meta: Mapping[str, Any], runtime: ModelRuntime) -> tuple[str, ...]:
    names = meta.get("feature_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ModelLoadError(
                f"{METADATA_FILE}: 'feature_names' must be a list of non-empty strings")
        if len(set(names)) != len(names):
            raise ModelLoadError("metadata 'feature_names' has duplicates")
        if len(names) != runtime.n_features:
            raise ModelLoadError(
                f"metadata lists {len(names)} feature_names but the model takes "
                f"{runtime.n_features} features"
            )
        if runtime.feature_names is not None and tuple(names) != runtime.feature_names:
            raise ModelLoadError(
                "metadata 'feature_names' differ from the names stored in the artifact"
            )
        return tuple(names)
    if runtime.feature_names is not None:
        return runtime.feature_names
    return tuple(f"f{i}" for i in range(runtime.n_features))


def check_model(model: LoadedModel) -> None:
    """Predict the golden sample (sample.json) and compare, or smoke-test one zero row."""
    if not os.path.lexists(model.folder / SAMPLE_FILE):  # a dangling link is refused below
        X = np.zeros((1, model.n_features))
        try:
            model.predict(X)
        except Exception as exc:
            raise ModelLoadError(f"model fails to predict one row of zeros: "
                                 f"{clean_native_error(str(exc))}") from exc
        return
    sample = parse_folder_json(SAMPLE_FILE, read_folder_file(
        model.folder, SAMPLE_FILE, limit=MAX_SAMPLE_BYTES,
        limit_name=f"the limit for {SAMPLE_FILE}"))
    try:
        if not isinstance(sample, dict) or not isinstance(sample.get("features"), dict):
            raise ValueError("'features' must be an object of columns")
        expected = sample.get("expected")
        if not isinstance(expected, dict):
            raise ValueError("'expected' must be an object")
        X = columns_to_matrix(sample["features"], model.feature_names, model.feature_index)
    except (ValueError, KeyError, TypeError, InvalidInputError) as exc:
        msg = getattr(exc, "message", None) or str(exc)
        raise ModelLoadError(f"{SAMPLE_FILE} is unusable: {msg}") from exc
    try:
        labels, proba = model.predict(X)
    except Exception as exc:
        raise ModelLoadError(f"model fails to predict {SAMPLE_FILE}: "
                             f"{clean_native_error(str(exc))}") from exc
    got = labels.tolist()
    want = expected.get("prediction")
    if model.task == "regression" or not isinstance(want, list):
        same = _close(got, want)
    else:
        same = [str(x) for x in got] == [str(x) for x in want]
    if not same:
        raise ModelLoadError(f"golden check failed: predicted {got[:5]}, {SAMPLE_FILE} expects "
                             f"{(want or [])[:5]}")
    want_p = expected.get("probabilities")
    if want_p is not None:
        if proba is None or model.class_keys is None:
            raise ModelLoadError(f"golden check failed: {SAMPLE_FILE} has probabilities, the "
                                 f"model gives none")
        got_p = {k: proba[:, i].tolist() for i, k in enumerate(model.class_keys)}
        if set(got_p) != set(want_p) or not all(_close(got_p[k], want_p[k]) for k in got_p):
            raise ModelLoadError("golden check failed: probabilities differ from sample.json")


def _close(a: Any, b: Any) -> bool:
    try:
        return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                                rtol=1e-6, atol=1e-9)) and len(a) == len(b)
    except (TypeError, ValueError):
        return False


# --- writing ---------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _sample_matrix(sample: Any, feature_names: Sequence[str]) -> np.ndarray:
    if isinstance(sample, Mapping):
        index = {n: i for i, n in enumerate(feature_names)}
        return columns_to_matrix(
            {k: list(map(float, v)) for k, v in sample.items()}, feature_names, index
        )
    X = np.asarray(sample, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(f"sample must be (rows, {len(feature_names)}), got shape {X.shape}")
    return X


def save_model(
    estimator: Any,
    folder: str | os.PathLike[str],
    *,
    version: str,
    feature_names: Sequence[str] | None = None,
    sample: Any = None,
    artifact_format: str | None = None,
) -> Path:
    """Write a fitted model of any framework plug-in as a model folder; return its path.

    The folder's name is the model's name (folder_format.MODEL_NAME_RULE). Each framework
    writes its own safe format, never pickle: scikit-learn skops, XGBoost JSON
    (`artifact_format="ubj"` for UBJSON), LightGBM its text model file. `feature_names`
    (in the model's column order) default to the names the model was fitted with, else
    f0..f{n-1}. `sample` (a few rows, as a
    (rows, n_features) array or {name: [values]} columns) is stored with the framework's
    own predictions as sample.json, the golden check every (re)load must pass.
    The written folder is loaded back and checked before this returns.
    """
    folder = Path(folder)
    validate_model_name(folder.name)
    plugin = framework_of(estimator)
    runtime_cls = plugin.runtime_class()
    runtime = runtime_cls.from_estimator(estimator)
    if feature_names is not None:
        feature_names = [str(n) for n in feature_names]
        if len(feature_names) != runtime.n_features:
            raise ValueError(f"{len(feature_names)} feature_names for a model with "
                             f"{runtime.n_features} features")
        if len(set(feature_names)) != len(feature_names):
            raise ValueError("feature_names has duplicates")
    else:
        feature_names = list(runtime.feature_names or
                             (f"f{i}" for i in range(runtime.n_features)))

    stored, data = runtime_cls.artifact_of(estimator, artifact_format)
    fw_version = str(getattr(__import__(plugin.library), "__version__", "unknown"))
    folder.mkdir(parents=True, exist_ok=True)
    artifact = folder / stored

    for old in folder.iterdir():  # exactly one artifact per folder
        if old.is_file() and old.stem == "model" and old != artifact:
            old.unlink()
    _write_atomic(artifact, data)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "framework": plugin.name,
        "framework_version": fw_version,
        "version": str(version),
        "artifact": artifact.name,
        "sha256": sha256_hex(data),
        "task": runtime.task,
        "feature_names": feature_names,
        "classes": list(runtime.classes) if runtime.classes is not None else None,
        "allow_unsafe": False,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_atomic(folder / METADATA_FILE, json.dumps(meta, indent=2).encode())

    sample_path = folder / SAMPLE_FILE
    if sample is not None:
        X = _sample_matrix(sample, feature_names)
        expected = _golden_outputs(estimator, runtime, X)
        doc = {
            "features": {n: X[:, i].tolist() for i, n in enumerate(feature_names)},
            "expected": expected,
        }
        _write_atomic(sample_path, json.dumps(doc).encode())
    elif sample_path.exists():
        sample_path.unlink()  # a stale golden sample would fail the new model's check
    load_model(folder, check=True)
    return folder


def _golden_outputs(estimator: Any, runtime: ModelRuntime, X: np.ndarray) -> dict[str, Any]:
    """The framework's own predict / predict_proba (not our runtime's), as golden output."""
    pred, proba = runtime.reference_outputs(estimator, X)
    probs = None
    if proba is not None and runtime.classes is not None:
        probs = {f"class_{c}": proba[:, i].tolist() for i, c in enumerate(runtime.classes)}
    return {"prediction": np.asarray(pred).tolist(), "probabilities": probs}
