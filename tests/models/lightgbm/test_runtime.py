"""LightGBM through the model folder: save_model, load_model, the compiled fast path and
LightGBM's own predict give the estimator's answers; what cannot be served is refused with
a message that says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from serving_runtime import load_model, save_model
from serving_runtime.errors import ModelLoadError
from serving_runtime.models.folder_format import artifact_kind

ROWS = np.random.default_rng(5).normal(0, 2.0, size=(500, 6))


def _multiclass() -> tuple[lgb.LGBMClassifier, np.ndarray]:
    X, y = make_classification(n_samples=600, n_features=6, n_informative=4, n_classes=3,
                               random_state=0)
    labels = np.array([-1, 0, 1])[y]  # a trading signal: short, flat, long
    return lgb.LGBMClassifier(n_estimators=25, num_leaves=7, verbose=-1).fit(X, labels), X


@pytest.mark.parametrize("fast_path", [True, False], ids=["compiled", "lightgbm"])
def test_classifier_labels_and_probabilities_match_the_estimator(tmp_path: Path,
                                                                  fast_path: bool) -> None:
    est, X = _multiclass()
    folder = save_model(est, tmp_path / "signal_model", version="1", sample=X[:4])
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["framework"] == "lightgbm" and meta["artifact"] == "model.txt"
    assert meta["classes"] == [-1, 0, 1] and meta["task"] == "classification"
    model = load_model(folder, fast_path=fast_path)
    assert model.fast_path is not None
    assert model.fast_path.state == ("active" if fast_path else "disabled"), model.fast_path
    pred, proba = model.predict(ROWS)
    np.testing.assert_array_equal(pred, est.predict(ROWS))
    np.testing.assert_allclose(proba, est.predict_proba(ROWS), rtol=0, atol=1e-6)
    one, _ = model.predict(ROWS[:1])  # the one-row path a single /predict takes
    assert one.tolist() == est.predict(ROWS[:1]).tolist()


def test_regressor_and_booster_match_lightgbm(tmp_path: Path) -> None:
    X, y = make_regression(n_samples=500, n_features=6, noise=3.0, random_state=1)
    reg = lgb.LGBMRegressor(n_estimators=30, verbose=-1).fit(X, y)
    booster = lgb.train({"objective": "poisson", "verbose": -1, "num_leaves": 7},
                        lgb.Dataset(X, np.abs(y) / 50), num_boost_round=20)
    for name, est, want in (("reg", reg, reg.predict(ROWS)),
                            ("poisson.booster", booster, booster.predict(ROWS))):
        model = load_model(save_model(est, tmp_path / name, version="2", sample=X[:3]))
        assert model.task == "regression" and model.classes is None
        assert model.fast_path is not None and model.fast_path.active, model.fast_path
        pred, proba = model.predict(ROWS)
        assert proba is None
        np.testing.assert_allclose(pred, want, rtol=1e-9, atol=1e-9)


# eval_set works on every lightgbm the project accepts (>=4.5); 4.7 deprecates its name
@pytest.mark.filterwarnings("ignore:The argument 'eval_set' is deprecated")
def test_early_stopping_saves_and_serves_the_best_iteration(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=800, n_features=6, random_state=2)
    est = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.3, verbose=-1)
    est.fit(X[:600], y[:600], eval_set=[(X[600:], y[600:])],
            callbacks=[lgb.early_stopping(3, verbose=False)])
    assert 0 < est.best_iteration_ < 300  # otherwise the test proves nothing
    folder = save_model(est, tmp_path / "es", version="1")
    text = (folder / "model.txt").read_text()
    assert text.count("\nTree=") == est.best_iteration_
    _, proba = load_model(folder).predict(ROWS)
    np.testing.assert_allclose(proba, est.predict_proba(ROWS), rtol=0, atol=1e-6)


def test_metadata_classes_that_do_not_fit_the_model_are_refused(tmp_path: Path) -> None:
    est, _ = _multiclass()
    folder = save_model(est, tmp_path / "m", version="1")
    meta = json.loads((folder / "metadata.json").read_text())
    meta["classes"] = ["a", "b"]
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"metadata classes \['a', 'b'\] do not fit the "
                                             r"model's 3 classes"):
        load_model(folder)


def test_a_corrupt_model_file_never_reaches_lightgbm(tmp_path: Path) -> None:
    est, _ = _multiclass()
    folder = save_model(est, tmp_path / "m", version="1")
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["sha256"]  # the checker, not the digest, must catch it
    (folder / "metadata.json").write_text(json.dumps(meta))
    text = (folder / "model.txt").read_text()
    (folder / "model.txt").write_text(text.replace("left_child=", "left_child=9999 ", 1))
    with pytest.raises(ModelLoadError, match="model.txt is not a usable LightGBM model"):
        load_model(folder)


def test_pickle_is_no_lightgbm_artifact() -> None:
    assert artifact_kind(".txt", "lightgbm").stored_name == "model.txt"
    with pytest.raises(ValueError, match="a .pkl artifact is read by .*framework is lightgbm"):
        artifact_kind(".pkl", "lightgbm")


def test_pandas_categorical_models_are_refused_with_the_reason(tmp_path: Path) -> None:
    # What LightGBM's Python package appends for a DataFrame with categorical columns
    # (pandas is not installed here): the category lists requests cannot carry.
    est, _ = _multiclass()
    folder = save_model(est, tmp_path / "cat", version="1")
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["sha256"]
    (folder / "metadata.json").write_text(json.dumps(meta))
    text = (folder / "model.txt").read_text()
    assert "pandas_categorical:null" in text
    (folder / "model.txt").write_text(
        text.replace("pandas_categorical:null", 'pandas_categorical:[["XNAS", "XNYS"]]'))
    with pytest.raises(ModelLoadError, match="pandas categorical columns"):
        load_model(folder)


def test_save_cli_reads_a_lightgbm_model_file(tmp_path: Path) -> None:
    est, X = _multiclass()
    src = tmp_path / "exported.txt"
    est.booster_.save_model(str(src))
    out = subprocess.run([sys.executable, "-m", "serving_runtime", "save", "--from", str(src),
                          "--dest", str(tmp_path / "models" / "test_model"), "--version", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["artifact"] == "model.txt" and doc["task"] == "classification"
    model = load_model(tmp_path / "models" / "test_model")
    # a bare Booster file has no labels: class indexes, as Booster.predict's argmax
    np.testing.assert_array_equal(model.predict(ROWS)[0],
                                  np.argmax(est.predict_proba(ROWS), axis=1))


@pytest.mark.parametrize(("extra", "message"), [
    (["--format", "ubj"], "save: LightGBM models are saved as 'txt', not 'ubj'"),
    (["--framework", "sklearn"], "a .txt file is read by lightgbm, not sklearn"),
])
def test_save_cli_says_what_is_wrong_without_a_traceback(tmp_path: Path, extra: list[str],
                                                         message: str) -> None:
    est, _ = _multiclass()
    src = tmp_path / "exported.txt"
    est.booster_.save_model(str(src))
    out = subprocess.run([sys.executable, "-m", "serving_runtime", "save", "--from", str(src),
                          "--dest", str(tmp_path / "out" / "m"), "--version", "1", *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "out" / "m").exists()


def test_an_estimator_whose_objective_contradicts_it_is_refused(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=300, n_features=6, random_state=4)
    est = lgb.LGBMRegressor(objective="binary", n_estimators=5, verbose=-1).fit(X, y)
    with pytest.raises(ModelLoadError, match="LGBMRegressor with objective 'binary'"):
        save_model(est, tmp_path / "m", version="1")


def test_the_load_check_of_a_relabelled_classifier_spans_its_features(tmp_path: Path) -> None:
    """The check rows follow the trees' own feature ranges (prices near 500 here), also
    when the evaluator answers with adopted labels."""
    rng = np.random.default_rng(9)
    X = rng.normal(500, 40, size=(600, 3))
    y = np.where(X[:, 0] > 500, "up", "down")
    est = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(X, y)
    model = load_model(save_model(est, tmp_path / "px", version="1"))
    evaluator = model.runtime.evaluator  # type: ignore[attr-defined]
    assert evaluator.feature_center is not None and evaluator.feature_scale is not None
    assert 400 < float(evaluator.feature_center[0]) < 600
    _, proba = model.predict(X[:50])
    np.testing.assert_allclose(proba, est.predict_proba(X[:50]), rtol=0, atol=1e-6)


def test_metadata_classes_on_a_regressor_are_refused(tmp_path: Path) -> None:
    X, y = make_regression(n_samples=200, n_features=6, random_state=1)
    folder = save_model(lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, y),
                        tmp_path / "r", version="1")
    meta = json.loads((folder / "metadata.json").read_text())
    meta["classes"] = [0, 1]
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"metadata lists classes \[0, 1\] but the "
                                             r"artifact is a regression model"):
        load_model(folder)


def test_a_users_subclass_belongs_to_its_frameworks_plug_in() -> None:
    import xgboost as xgb

    from serving_runtime.models.runtimes import framework_of

    class HouseXGB(xgb.XGBClassifier):  # defined outside xgboost's modules
        pass

    class HouseLGBM(lgb.LGBMClassifier):
        pass

    assert framework_of(HouseXGB()).name == "xgboost"
    assert framework_of(HouseLGBM()).name == "lightgbm"
