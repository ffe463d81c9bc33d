"""Model folders: safe formats, sha256, pickle refused by default (and never executed),
trusted skops types, metadata checks, model names."""

from __future__ import annotations

import json
import pickle
import re
import shutil

import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from serving_runtime import (
    IntegrityError,
    ModelLoadError,
    UnsafeArtifactError,
    load_model,
    predict_from_body,
    save_model,
)


class WritesMarker:
    """Unpickling this runs code: it writes a marker file (the attack we must not run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def malicious_folder(tmp_path, name="evil", meta_extra=None):
    folder = tmp_path / "models" / name
    folder.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    (folder / "model.joblib").write_bytes(pickle.dumps(WritesMarker(str(marker))))
    meta = {"framework": "sklearn", "version": "1", **(meta_extra or {})}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder, marker


def double(x):
    return x * 2


@pytest.fixture(scope="module")
def fitted():
    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    return LogisticRegression().fit(X, y), X


def test_malicious_pickle_refused_by_default_and_not_executed(tmp_path):
    folder, marker = malicious_folder(tmp_path)
    with pytest.raises(UnsafeArtifactError) as err:
        load_model(folder)
    assert "ALLOW_UNSAFE_LOADING=true" in str(err.value)
    assert "spec.model.allowUnsafeLoading" in str(err.value)
    assert not marker.exists()


def test_a_folder_cannot_allow_its_own_pickle(tmp_path):
    """"allow_unsafe": true in a hostile folder's metadata.json must not opt it in."""
    folder, marker = malicious_folder(tmp_path, meta_extra={"allow_unsafe": True})
    with pytest.raises(UnsafeArtifactError, match="ALLOW_UNSAFE_LOADING"):
        load_model(folder)
    assert not marker.exists()


def test_malicious_pickle_refused_by_server(tmp_path, start_server):
    folder, marker = malicious_folder(tmp_path)
    srv = start_server(folder.parent)
    doc = srv.wait_startup_done()
    assert doc["ready"] is False and doc["status"] == "degraded"
    assert "pickle/joblib artifact" in doc["reasons"][0]
    assert "ALLOW_UNSAFE_LOADING" in doc["reasons"][0]
    assert srv.client.get("/v2/health/ready").status_code == 503
    assert srv.client.get("/health").status_code == 503
    assert 'model_load_failures_total{model_name="evil"} 1.0' in srv.client.get("/metrics").text
    assert not marker.exists()


def test_joblib_allowed_by_the_setting(tmp_path, fitted):
    est, X = fitted
    folder = tmp_path / "legacy"
    folder.mkdir(parents=True)
    joblib.dump(est, folder / "model.joblib")
    (folder / "metadata.json").write_text(json.dumps(
        {"framework": "sklearn", "version": "0.9", "allow_unsafe": True}))
    with pytest.raises(UnsafeArtifactError):
        load_model(folder)  # the folder's own opt-in is not enough
    model = load_model(folder, allow_unsafe=True)
    out = predict_from_body(model, {"model_name": "legacy", "features": {
        f"f{i}": X[:5, i].tolist() for i in range(4)}})
    assert out["prediction"] == est.predict(X[:5]).tolist()
    assert model.version == "0.9"


def test_sha256_mismatch_refused_before_loading(tmp_path, fitted):
    est, _ = fitted
    folder = save_model(est, tmp_path / "m", version="1")
    meta = json.loads((folder / "metadata.json").read_text())
    good = meta["sha256"]
    meta["sha256"] = "ab" * 32
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match=f"sha256 mismatch for model.skops.*{good}"):
        load_model(folder)


def test_sha256_mismatch_refuses_pickle_even_when_unsafe_allowed(tmp_path):
    folder, marker = malicious_folder(tmp_path, meta_extra={"sha256": "cd" * 32,
                                                            "allow_unsafe": True})
    with pytest.raises(IntegrityError):
        load_model(folder, allow_unsafe=True)
    assert not marker.exists()


def test_skops_untrusted_type_is_refused_by_name(tmp_path, fitted):
    est, X = fitted
    # A FunctionTransformer holding an arbitrary function: skops flags it as untrusted.
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(FunctionTransformer(double), est).fit(X, est.predict(X))
    folder = tmp_path / "fn"
    folder.mkdir()
    import skops.io as sio

    sio.dump(pipe, folder / "model.skops")
    (folder / "metadata.json").write_text(json.dumps({"framework": "sklearn", "version": "1"}))
    with pytest.raises(UnsafeArtifactError, match=r"tests\.models\.test_loading\.double"):
        load_model(folder)
    assert load_model(folder, allow_unsafe=True).task == "classification"


def test_save_model_writes_metadata_sha_and_sample(tmp_path, fitted):
    est, X = fitted
    folder = save_model(est, tmp_path / "iris-v2", version="2.1",
                        feature_names=["a", "b", "c", "d"], sample=X[:3])
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["framework"] == "sklearn" and meta["artifact"] == "model.skops"
    assert meta["feature_names"] == ["a", "b", "c", "d"] and meta["task"] == "classification"
    assert meta["classes"] == [0, 1] and meta["version"] == "2.1"
    import hashlib

    assert meta["sha256"] == hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
    sample = json.loads((folder / "sample.json").read_text())
    assert sample["expected"]["prediction"] == est.predict(X[:3]).tolist()
    assert [p.name for p in folder.iterdir() if p.stem == "model"] == ["model.skops"]


def test_minimal_metadata_infers_the_rest(tmp_path):
    """A bare XGBoost artifact with only framework + version (what fetch writes)."""
    import xgboost as xgb

    X, y = make_classification(n_samples=200, n_features=3, n_informative=2, n_redundant=0,
                               random_state=0)
    clf = xgb.XGBClassifier(n_estimators=5).fit(X, y)
    folder = tmp_path / "bare"
    folder.mkdir()
    clf.save_model(folder / "model.ubj")
    (folder / "metadata.json").write_text(json.dumps({"framework": "xgboost", "version": "5"}))
    model = load_model(folder)
    assert model.feature_names == ("f0", "f1", "f2") and model.task == "classification"
    assert model.class_keys == ("class_0", "class_1")


@pytest.mark.parametrize("meta,fragment", [
    ({"version": "1"}, "'framework' is required"),
    ({"framework": "sklearn"}, "'version' is required"),
    ({"framework": "torch", "version": "1"}, "unknown framework 'torch'"),
    ({"framework": "sklearn", "version": "1", "feature_names": ["a"]},
     "lists 1 feature_names but the model takes 4"),
    ({"framework": "sklearn", "version": "1", "task": "regression"},
     "metadata says task 'regression'"),
    ({"framework": "sklearn", "version": "1", "artifact": "../x.skops"},
     "must be a file name in the folder"),
])
def test_bad_metadata_is_refused(tmp_path, fitted, meta, fragment):
    est, _ = fitted
    folder = save_model(est, tmp_path / "m", version="1")
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=None) as err:
        load_model(folder)
    assert fragment in str(err.value)


def test_two_artifacts_are_refused(tmp_path, fitted):
    est, _ = fitted
    folder = save_model(est, tmp_path / "m", version="1")
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["artifact"]
    (folder / "metadata.json").write_text(json.dumps(meta))
    shutil.copy(folder / "model.skops", folder / "model.joblib")
    with pytest.raises(ModelLoadError, match="exactly one artifact"):
        load_model(folder)


# The names of the original design document and of trading teams' own folders.
@pytest.mark.parametrize("name", ["your_model", "test_model", "Iris", "iris.v2", "iris-",
                                  "_private", "Fraud.v2-EU_1", "a" * 128, "0"])
def test_the_names_people_use_save_and_load(tmp_path, fitted, name):
    est, X = fitted
    folder = save_model(est, tmp_path / name, version="1", sample=X[:2])
    model = load_model(folder)
    assert model.name == name


@pytest.mark.parametrize(("name", "why"), [
    (".hidden", "not starting with '.'"), ("..", "not starting with '.'"),
    ("-iris", "not starting with '.' or '-'"), ("a" * 129, "at most 128"),
    ("a b", "letters, digits"), ("a:b", "letters, digits"), ("mod\u00e8le", "letters, digits"),
    ("a\\b", "letters, digits"), ("x\n", "letters, digits"),
])
def test_names_that_cannot_be_a_folder_or_label_are_refused(tmp_path, fitted, name, why):
    est, _ = fitted
    with pytest.raises(ValueError, match=f"invalid model name .*{re.escape(why)}"):
        save_model(est, tmp_path / name, version="1")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_save_cli_converts_joblib_only_when_trusted(tmp_path, fitted):
    import subprocess
    import sys

    est, X = fitted
    src = tmp_path / "legacy.joblib"
    joblib.dump(est, src)
    cmd = [sys.executable, "-m", "serving_runtime", "save", "--from", str(src), "--dest",
           str(tmp_path / "models" / "conv"), "--version", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--trust-pickle" in r.stderr
    assert not (tmp_path / "models" / "conv").exists()
    r = subprocess.run([*cmd, "--trust-pickle"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["artifact"] == "model.skops"
    model = load_model(tmp_path / "models" / "conv")
    out = predict_from_body(model, {"model_name": "conv", "features": {
        f"f{i}": X[:10, i].tolist() for i in range(4)}})
    assert out["prediction"] == est.predict(X[:10]).tolist()
