"""The model-file checks in front of the frameworks (issue 12, part C) must never refuse a
real model: every kind of XGBoost and scikit-learn tree model fitted here goes through
them; plus the pieces on their own (reading a folder file, UBJSON bounds, native error
text). The hostile side is tests/battery/test_battery_model_files.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from serving_runtime import ModelLoadError, load_model, predict_from_body, save_model
from serving_runtime.models.folder_format import read_folder_file
from serving_runtime.models.runtimes.native_errors import clean_native_error
from serving_runtime.models.runtimes.sklearn.check import check_sklearn_trees
from serving_runtime.models.runtimes.xgboost.check import (
    ModelFileError,
    checked_model_bytes,
    parse_ubjson,
)

Xc, yc = make_classification(n_samples=300, n_features=5, n_informative=3, n_classes=3,
                             n_clusters_per_class=1, random_state=0)
Xr, yr = make_regression(n_samples=300, n_features=5, random_state=0)


def _xgb_models():
    import xgboost as xgb

    yield "binary", xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(Xc, yc > 0), Xc
    yield "multi", xgb.XGBClassifier(n_estimators=5, max_depth=3).fit(Xc, yc), Xc
    yield "regression", xgb.XGBRegressor(n_estimators=5, max_depth=4).fit(Xr, yr), Xr
    yield "dart", xgb.XGBRegressor(n_estimators=5, booster="dart").fit(Xr, yr), Xr
    yield "lossguide", xgb.XGBClassifier(n_estimators=5, grow_policy="lossguide",
                                         max_leaves=7).fit(Xc, yc), Xc
    yield "early-stopped", xgb.XGBClassifier(n_estimators=30, early_stopping_rounds=2).fit(
        Xc[:200], yc[:200], eval_set=[(Xc[200:], yc[200:])], verbose=False), Xc


@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_every_kind_of_xgboost_model_passes_the_checks(tmp_path: Path, fmt: str) -> None:
    for kind, est, X in _xgb_models():
        folder = save_model(est, tmp_path / f"{kind}-{fmt}", version="1", sample=X[:5],
                            artifact_format=fmt)  # save_model loads it back and checks
        model = load_model(folder)
        out = predict_from_body(model, {"model_name": folder.name, "features": {
            n: X[:3, i].tolist() for i, n in enumerate(model.feature_names)}})
        assert out["prediction"] == est.predict(X[:3]).tolist(), kind


def test_xgboost_categorical_and_multi_target_models_pass() -> None:
    """Models with categorical splits and vector leaves, checked on their own bytes."""
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 6, 400), rng.normal(size=(400, 2))]).astype(float)
    y = (X[:, 0] % 2 == 0) ^ (X[:, 1] > 0)
    dtrain = xgb.DMatrix(X, y, feature_types=["c", "q", "q"], enable_categorical=True)
    booster = xgb.train({"max_cat_to_onehot": 1, "max_depth": 3}, dtrain, 5)
    doc = json.loads(booster.save_raw("json"))
    assert any(t["categories"] for t in doc["learner"]["gradient_booster"]["model"]["trees"])
    targets = xgb.XGBRegressor(n_estimators=3, multi_strategy="multi_output_tree",
                               tree_method="hist").fit(Xr, np.column_stack([yr, -yr]))
    for b in (booster, targets.get_booster()):
        for fmt, suffix in (("json", ".json"), ("ubj", ".ubj")):
            raw = bytes(b.save_raw(fmt))
            assert checked_model_bytes(raw, suffix) == raw


def test_every_kind_of_sklearn_tree_model_passes_the_checks(tmp_path: Path) -> None:
    from sklearn.ensemble import (
        BaggingClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    models = {
        "rf": (RandomForestClassifier(n_estimators=5, random_state=0).fit(Xc, yc), Xc),
        "et": (ExtraTreesRegressor(n_estimators=5, random_state=0).fit(Xr, yr), Xr),
        "gb": (GradientBoostingClassifier(n_estimators=5).fit(Xc, yc), Xc),
        "hgb": (HistGradientBoostingClassifier(max_iter=5).fit(Xc, yc), Xc),
        "dt": (DecisionTreeRegressor(max_depth=5).fit(Xr, yr), Xr),
        "bagging": (BaggingClassifier(n_estimators=4, max_features=0.6, random_state=0)
                    .fit(Xc, yc), Xc),
        "pipe-wider": (make_pipeline(StandardScaler(), PolynomialFeatures(2),
                                     RandomForestClassifier(n_estimators=3, random_state=0))
                       .fit(Xc, yc), Xc),
    }
    for name, (est, X) in models.items():
        folder = save_model(est, tmp_path / name, version="1", sample=X[:5])
        model = load_model(folder)
        out = predict_from_body(model, {"model_name": name, "features": {
            n: X[:4, i].tolist() for i, n in enumerate(model.feature_names)}})
        assert out["prediction"] == est.predict(X[:4]).tolist(), name


def test_hist_gradient_boosting_with_categorical_splits_passes() -> None:
    """(skops does not load this model kind with the trusted list - functools.partial -
    so its trees are checked in memory here.)"""
    from sklearn.ensemble import HistGradientBoostingClassifier

    Xcat = Xc.copy()
    Xcat[:, 0] = np.abs(Xcat[:, 0] * 3).astype(int) % 5
    est = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(Xcat, yc)
    assert any(p.nodes["is_categorical"].any() for stage in est._predictors for p in stage)
    check_sklearn_trees(est)


def test_a_tampered_forest_member_is_refused() -> None:
    """A forest hands its input to its trees unvalidated: a member claiming more
    features than the forest is refused (not only a tree indexing past its own width)."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=3, random_state=0).fit(Xc, yc)
    check_sklearn_trees(rf)
    rf.estimators_[1].n_features_in_ = 50
    with pytest.raises(ModelFileError, match="member takes 50 features, the ensemble 5"):
        check_sklearn_trees(rf)


def test_ubjson_lengths_are_bounded_by_the_file() -> None:
    import xgboost as xgb

    raw = bytes(xgb.XGBClassifier(n_estimators=2).fit(Xc, yc).get_booster().save_raw("ubj"))
    assert isinstance(parse_ubjson(raw)["learner"], dict)
    for cut in (1, 10, len(raw) // 2, len(raw) - 1):
        with pytest.raises(ModelFileError, match="truncated or corrupt"):
            parse_ubjson(raw[:cut])
    with pytest.raises(ModelFileError, match="bytes after the model"):
        parse_ubjson(raw + b"Z")


def test_read_folder_file_checks_before_reading(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "..2024_01_01_00_00_00.123").mkdir(parents=True)
    (folder / "..2024_01_01_00_00_00.123" / "a.json").write_bytes(b"x" * 100)
    os.symlink("..2024_01_01_00_00_00.123", folder / "..data")
    os.symlink("..data/a.json", folder / "a.json")  # a ConfigMap key: followed
    assert read_folder_file(folder, "a.json", limit=100, limit_name="L") == b"x" * 100
    with pytest.raises(ModelLoadError, match=r"a\.json is 100 bytes, over L \(99\)"):
        read_folder_file(folder, "a.json", limit=99, limit_name="L")
    os.mkfifo(folder / "f.json")
    with pytest.raises(ModelLoadError, match=r"f\.json is a FIFO, not a regular file"):
        read_folder_file(folder, "f.json", limit=100, limit_name="L")
    os.symlink("../outside.json", folder / "out.json")
    (tmp_path / "outside.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"out\.json is a symlink to .*outside\.json, "
                                              r"outside the model folder"):
        read_folder_file(folder, "out.json", limit=100, limit_name="L")


def test_max_artifact_bytes_refuses_a_real_model_by_its_size(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    folder = save_model(RandomForestClassifier(n_estimators=3).fit(Xc, yc), tmp_path / "rf",
                        version="1")
    size = (folder / "model.skops").stat().st_size
    assert load_model(folder, max_artifact_bytes=size).version == "1"
    with pytest.raises(ModelLoadError, match=rf"model\.skops is {size} bytes, over "
                                              rf"MAX_ARTIFACT_BYTES \({size - 1}\)"):
        load_model(folder, max_artifact_bytes=size - 1)


def test_native_error_text_keeps_the_first_meaningful_line() -> None:
    import xgboost as xgb

    with pytest.raises(xgb.core.XGBoostError) as err:
        xgb.Booster().load_model(bytearray(b'{"version": [3, 0, 0]}'))
    raw = str(err.value)
    assert "Stack trace" in raw and "[bt]" in raw  # what XGBoost gives
    assert clean_native_error(raw) == "Invalid cast, from Null to Object"
    assert clean_native_error("x" * 1000, limit=50) == "x" * 47 + "..."
    assert clean_native_error("bad \x00\x1b byte") == "bad \\x00\\x1b byte"


def test_max_artifact_bytes_is_a_setting_and_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving_runtime.__main__ import serve_parser
    from serving_runtime.server.settings import Settings

    monkeypatch.delenv("MAX_ARTIFACT_BYTES", raising=False)
    assert Settings().max_artifact_bytes == 2 * 1024**3
    args = vars(serve_parser().parse_args(["--max-artifact-bytes", "12345"]))
    assert Settings(**{k: v for k, v in args.items() if v is not None}).max_artifact_bytes == 12345
    monkeypatch.setenv("MAX_ARTIFACT_BYTES", "777")
    assert Settings().max_artifact_bytes == 777
