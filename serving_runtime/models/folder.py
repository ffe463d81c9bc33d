"""The model folder format and its two entry points, `save_model` and `load_model`.

    <models-dir>/<model-name>/
        metadata.json   framework, version, artifact, sha256, task, feature_names, classes
        model.skops | model.json | model.ubj | model.joblib   (exactly one artifact)
        sample.json     optional golden input + expected output, checked on every load

Only `framework` and `version` are required in metadata.json (a bare artifact fetched
by `serving_runtime.tools.fetch` gets just those); everything else is read from the artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving_runtime.errors import IntegrityError, InvalidInputError, ModelLoadError
from serving_runtime.models.features import columns_to_matrix
from serving_runtime.models.runtimes import ModelRuntime, runtime_class
from serving_runtime.models.runtimes.native_errors import clean_native_error
from serving_runtime.models.runtimes.pickle_artifact import PICKLE_EXTENSIONS
from serving_runtime.models.runtimes.xgboost_check import MAX_FEATURES
from serving_runtime.models.trees.accelerate import CHECK_ROWS, FastPathStatus, accelerate

METADATA_FILE = "metadata.json"
SAMPLE_FILE = "sample.json"
FORMAT_VERSION = 1
ARTIFACT_EXTENSIONS = (".skops", ".json", ".ubj", *PICKLE_EXTENSIONS)

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_valid_model_name(name: str) -> bool:
    """Model names are DNS-1123 labels, so the same name works as a Kubernetes object."""
    return len(name) <= 63 and bool(_DNS1123_LABEL.match(name))


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name (for a folder that is reported, not served), or
    None when it can."""
    if len(name) > 63:
        return (f"the name is {len(name)} characters long; model names are DNS-1123 labels "
                f"of at most 63 characters")
    if not _DNS1123_LABEL.match(name):
        return ("the name is not a DNS-1123 label (lower-case letters, digits and '-', "
                "starting and ending with a letter or digit), so it cannot name a model")
    return None


def validate_model_name(name: str) -> str:
    if not is_valid_model_name(name):
        raise ValueError(
            f"invalid model name {name!r}: use a DNS-1123 label (lower-case letters, digits "
            f"and '-', starting and ending with a letter or digit, at most 63 characters)"
        )
    return name


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


# --- reading ---------------------------------------------------------------------------
#
# Every file the loader reads goes through `read_folder_file`: it must resolve inside the
# model folder (a symlink may point into the folder - a ConfigMap/Secret volume is made of
# `key -> ..data/key` links, `..data -> ..<timestamp>/` - but not out of it), be a regular
# file (not a FIFO that blocks the loader forever, not a device) and be within its size
# limit, all checked on the open file before one byte is read. The artifact is then
# deserialised from exactly the bytes that were checked and hashed.

#: default of MAX_ARTIFACT_BYTES (settings.py); the fetch step's --max-bytes default too
DEFAULT_MAX_ARTIFACT_BYTES = 2 * 1024**3
MAX_METADATA_BYTES = 16 * 1024**2
MAX_SAMPLE_BYTES = 64 * 1024**2
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def read_folder_file(folder: Path, name: str, *, limit: int, limit_name: str) -> bytes:
    """The bytes of `folder/name`, refused (ModelLoadError naming the file) when it resolves
    outside `folder`, is not a regular file, or is larger than `limit` (`limit_name` is the
    setting or constant the message names) - checked with fstat before reading."""
    path = folder / name
    root = folder.resolve()
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        if path.is_symlink():
            raise ModelLoadError(f"{name} is a symlink to {os.readlink(path)!r}, which does "
                                 f"not exist") from None
        raise ModelLoadError(f"{name} is missing in {folder}") from None
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        raise ModelLoadError(f"{name} cannot be resolved: {exc}") from None
    if not _inside(real, root):
        raise ModelLoadError(
            f"{name} is a symlink to {real}, outside the model folder; refused (links must "
            f"stay inside the folder, as a ConfigMap volume's `{name} -> ..data/{name}` does)")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except OSError as exc:
        raise ModelLoadError(f"{name} cannot be opened: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a file")
            raise ModelLoadError(f"{name} is {kind}, not a regular file; refused")
        if st.st_size > limit:
            raise ModelLoadError(f"{name} is {st.st_size} bytes, over {limit_name} ({limit}); "
                                 f"refused before reading it")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        # read(n) allocates n bytes up front: ask for the size seen (+1 to notice growth),
        # not the limit, which may exceed what the process may allocate.
        data = fh.read(min(limit, st.st_size) + 1)
    if len(data) > st.st_size:  # it grew after the check
        raise ModelLoadError(f"{name} grew while being read; refused (try the load again)")
    return data


def _reject_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON value")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return out


def parse_folder_json(name: str, data: bytes) -> Any:
    """Strict JSON of a model folder's own files: UTF-8, no NaN/Infinity, no duplicate
    keys (two readers could disagree on which one counts), nesting within Python's
    recursion limit. ModelLoadError names the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{name} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant,
                          object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ModelLoadError(f"{name} is nested too deeply") from None
    except ValueError as exc:
        raise ModelLoadError(f"{name} is not valid JSON: {exc}") from None


def read_metadata(folder: Path) -> dict[str, Any]:
    meta = parse_folder_json(METADATA_FILE, read_folder_file(
        folder, METADATA_FILE, limit=MAX_METADATA_BYTES,
        limit_name=f"the limit for {METADATA_FILE}"))
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{METADATA_FILE} must hold a JSON object")
    for key in ("framework", "version"):
        if not isinstance(meta.get(key), str | int | float) or isinstance(meta.get(key), bool):
            raise ModelLoadError(f"{METADATA_FILE}: '{key}' is required (a string)")
    for key, kind, label in (("artifact", str, "a file name"), ("task", str, "a string"),
                             ("sha256", str, "a hex string"),
                             ("feature_names", list, "a list of names"),
                             ("classes", list, "a list of labels"),
                             ("allow_unsafe", bool, "true or false")):
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise ModelLoadError(f"{METADATA_FILE}: '{key}' must be {label}, not "
                                 f"{type(meta[key]).__name__}")
    return meta


def _artifact_path(folder: Path, meta: Mapping[str, Any]) -> Path:
    name = meta.get("artifact")
    if name is not None:
        if (not isinstance(name, str) or "/" in name or "\\" in name or "\x00" in name
                or name in ("", ".", "..")):
            raise ModelLoadError(f"metadata 'artifact' must be a file name in the folder: {name!r}")
        path = folder / name
        if not os.path.lexists(path):
            raise ModelLoadError(f"artifact {name} named in metadata.json is missing")
        return path
    found = sorted(
        p for p in folder.iterdir()
        if p.stem == "model" and p.suffix.lower() in ARTIFACT_EXTENSIONS
        and (p.is_file() or p.is_symlink())  # a link out of the folder is refused, not skipped
    )
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ModelLoadError(
            f"expected exactly one artifact model.{{skops,json,ubj,joblib}} in {folder}, "
            f"found {names}"
        )
    return found[0]


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
    if not is_valid_model_name(name):
        raise ModelLoadError(f"folder name {name!r} is not a valid model name (DNS-1123 label)")
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    meta = read_metadata(folder)
    artifact = _artifact_path(folder, meta)
    data = read_folder_file(folder, artifact.name, limit=max_artifact_bytes,
                            limit_name="MAX_ARTIFACT_BYTES")
    digest = hashlib.sha256(data).hexdigest()
    expected = meta.get("sha256")
    if expected is not None and str(expected).lower() != digest:
        raise IntegrityError(
            f"sha256 mismatch for {artifact.name}: metadata says {expected}, file has {digest}"
        )
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
    # compiled evaluator, self-checked against the framework; falls back on disagreement
    runtime, fast_status = accelerate(runtime, model_name=name, enabled=fast_path,
                                      check_rows=fast_path_check_rows)

    feature_names = _feature_names(meta, runtime)
    task = meta.get("task")
    if task is not None and task != runtime.task:
        raise ModelLoadError(
            f"metadata says task {task!r} but the artifact is a {runtime.task} model"
        )
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


def _framework_of(estimator: Any) -> str:
    try:
        import xgboost as xgb

        if isinstance(estimator, xgb.XGBModel | xgb.Booster):
            return "xgboost"
    except ImportError:  # pragma: no cover - xgboost is a runtime dependency
        pass
    from sklearn.base import BaseEstimator

    if isinstance(estimator, BaseEstimator):
        return "sklearn"
    raise TypeError(f"save_model supports scikit-learn and XGBoost models, not "
                    f"{type(estimator).__name__}")


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
    """Write a fitted scikit-learn or XGBoost model as a model folder; return its path.

    The folder's name is the model's name (a DNS-1123 label). scikit-learn models are
    written with skops, XGBoost models in XGBoost's JSON (`artifact_format="ubj"` for
    UBJSON); never pickle. `feature_names` (in the model's column order) default to the
    names the model was fitted with, else f0..f{n-1}. `sample` (a few rows, as a
    (rows, n_features) array or {name: [values]} columns) is stored with the framework's
    own predictions as sample.json, the golden check every (re)load must pass.
    The written folder is loaded back and checked before this returns.
    """
    folder = Path(folder)
    validate_model_name(folder.name)
    framework = _framework_of(estimator)
    runtime = runtime_class(framework).from_estimator(estimator)
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

    folder.mkdir(parents=True, exist_ok=True)
    if framework == "sklearn":
        if artifact_format not in (None, "skops"):
            raise ValueError("scikit-learn models are saved as skops only")
        import skops.io as sio

        artifact = folder / "model.skops"
        data = sio.dumps(estimator)
        fw_version = __import__("sklearn").__version__
    else:
        fmt = artifact_format or "json"
        if fmt not in ("json", "ubj"):
            raise ValueError("XGBoost models are saved as 'json' or 'ubj'")
        import tempfile

        import xgboost as xgb

        artifact = folder / f"model.{fmt}"
        booster = estimator if isinstance(estimator, xgb.Booster) else estimator.get_booster()
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / artifact.name
            booster.save_model(str(p))
            data = p.read_bytes()
        fw_version = xgb.__version__

    for old in folder.iterdir():  # exactly one artifact per folder
        if old.is_file() and old.stem == "model" and old != artifact:
            old.unlink()
    _write_atomic(artifact, data)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": folder.name,
        "framework": framework,
        "framework_version": fw_version,
        "version": str(version),
        "artifact": artifact.name,
        "sha256": hashlib.sha256(data).hexdigest(),
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
        expected = _framework_outputs(estimator, runtime, X)
        doc = {
            "features": {n: X[:, i].tolist() for i, n in enumerate(feature_names)},
            "expected": expected,
        }
        _write_atomic(sample_path, json.dumps(doc).encode())
    elif sample_path.exists():
        sample_path.unlink()  # a stale golden sample would fail the new model's check
    load_model(folder, check=True)
    return folder


def _framework_outputs(estimator: Any, runtime: ModelRuntime, X: np.ndarray) -> dict[str, Any]:
    """The framework's own predict / predict_proba (not our runtime's), as golden output."""
    if hasattr(estimator, "predict") and not _is_booster(estimator):
        pred = np.asarray(estimator.predict(X))
        proba = (
            np.asarray(estimator.predict_proba(X))
            if runtime.has_proba and hasattr(estimator, "predict_proba") else None
        )
    else:
        pred, proba = runtime.predict(X)
    probs = None
    if proba is not None and runtime.classes is not None:
        probs = {f"class_{c}": proba[:, i].tolist() for i, c in enumerate(runtime.classes)}
    return {"prediction": pred.tolist(), "probabilities": probs}


def _is_booster(obj: Any) -> bool:
    return type(obj).__name__ == "Booster"
