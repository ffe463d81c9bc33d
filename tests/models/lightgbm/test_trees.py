"""The compiled LightGBM fast path answers exactly like `Booster.predict`: same labels,
probabilities and values on 10,000 rows that include exact thresholds, the doubles next
to them (no float32 rounding), zeros and values inside LightGBM's zero band; and refuses
(NotCompilable) what it does not evaluate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from serving_runtime.models.runtimes.lightgbm import trees as lgb_trees
from serving_runtime.models.runtimes.lightgbm.model_file import (
    MISSING_NAN,
    MISSING_ZERO,
    LightGBMModel,
    parse_model_text,
)
from serving_runtime.models.runtimes.lightgbm.trees import K_ZERO, compile_lightgbm
from serving_runtime.models.trees import PROBA_ATOL, NotCompilable, verify
from serving_runtime.models.trees.evaluator import Evaluator

N_ROWS = 10_000
N_FEATURES = 6


def _data(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NaN in column 1 and many exact zeros in column 2 (missing types NaN and Zero)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[rng.random(n) < 0.15, 1] = np.nan
    X[rng.random(n) < 0.3, 2] = 0.0
    signal = (X[:, 0] + np.nan_to_num(X[:, 1], nan=1.0) - (X[:, 2] == 0) + X[:, 3] * X[:, 4])
    return X, signal


def _train(params: dict[str, Any], target: Callable[[np.ndarray], np.ndarray],
           rounds: int = 40) -> lgb.Booster:
    X, signal = _data()
    base = {"verbose": -1, "num_leaves": 15, "min_data_in_leaf": 10, "num_threads": 1,
            "seed": 0, "deterministic": True}
    return lgb.train({**base, **params}, lgb.Dataset(X, target(signal)),
                     num_boost_round=rounds)


def _binary(s: np.ndarray) -> np.ndarray:
    return (s > 0).astype(int)


def _positive(s: np.ndarray) -> np.ndarray:
    return np.exp(s / 3)


MODELS: dict[str, Callable[[], lgb.Booster]] = {
    "binary": lambda: _train({"objective": "binary"}, _binary),
    "binary_zero_as_missing": lambda: _train({"objective": "binary", "zero_as_missing": True},
                                             _binary),
    "binary_sigmoid": lambda: _train({"objective": "binary", "sigmoid": 0.6}, _binary),
    "multiclass": lambda: _train({"objective": "multiclass", "num_class": 3},
                                 lambda s: np.digitize(s, [-0.7, 0.9])),
    "multiclassova": lambda: _train({"objective": "multiclassova", "num_class": 3},
                                    lambda s: np.digitize(s, [-0.7, 0.9]), rounds=15),
    "regression": lambda: _train({"objective": "regression"}, lambda s: 10 * s),
    "regression_sqrt": lambda: _train({"objective": "regression", "reg_sqrt": True},
                                      lambda s: 5 * s, rounds=20),
    "huber": lambda: _train({"objective": "huber"}, lambda s: s, rounds=15),
    "poisson": lambda: _train({"objective": "poisson"}, _positive),
    "gamma": lambda: _train({"objective": "gamma"}, _positive, rounds=15),
    "tweedie": lambda: _train({"objective": "tweedie"}, _positive, rounds=15),
    "cross_entropy": lambda: _train({"objective": "cross_entropy"},
                                    lambda s: 1 / (1 + np.exp(-s)), rounds=15),
    "rf": lambda: _train({"objective": "binary", "boosting": "rf", "bagging_freq": 1,
                          "bagging_fraction": 0.7}, _binary, rounds=20),
    "rf_regression": lambda: _train({"objective": "regression", "boosting": "rf",
                                     "bagging_freq": 1, "bagging_fraction": 0.7},
                                    lambda s: s, rounds=20),
    "dart": lambda: _train({"objective": "binary", "boosting": "dart"}, _binary, rounds=20),
}


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    return {name: make() for name, make in MODELS.items()}


def _parsed(booster: lgb.Booster, num_iteration: int = -1) -> LightGBMModel:
    return parse_model_text(booster.model_to_string(num_iteration=num_iteration).encode())


def _rows(model: LightGBMModel, seed: int = 1) -> np.ndarray:
    """N_ROWS rows: wide normals, exact zeros, the model's thresholds and the doubles just
    above/below them (float32 would round these onto the threshold), zero-band values."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 2.5, size=(N_ROWS, model.n_features))
    X[rng.random(X.shape) < 0.2] = 0.0
    per_feature: dict[int, list[float]] = {}
    for t in model.trees:
        for f, thr in zip(t.split_feature, t.threshold, strict=True):
            per_feature.setdefault(f, []).append(thr)
    for f, thr in per_feature.items():
        values = np.array(thr)
        for lo, hi, shift in ((0, 2000, 0.0), (2000, 3000, np.inf), (3000, 4000, -np.inf)):
            picked = rng.choice(values, size=hi - lo)
            X[lo:hi, f] = picked if not shift else np.nextafter(picked, shift)
    band = np.array([K_ZERO, -K_ZERO, np.nextafter(K_ZERO, 1), np.nextafter(-K_ZERO, -1),
                     5e-36, -5e-36, 1e-300, -0.0])
    X[4000:4500] = rng.choice(band, size=(500, model.n_features))
    return X


def _reference(booster: lgb.Booster, evaluator: Evaluator, num_iteration: int | None
               ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    def predict(X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = booster.predict(X, num_iteration=num_iteration, num_threads=1)
        if not evaluator.is_classifier:
            return out, None
        proba = np.column_stack([1.0 - out, out]) if out.ndim == 1 else out
        return proba.argmax(axis=1), proba
    return predict


def _agrees(booster: lgb.Booster, model: LightGBMModel, num_iteration: int | None = None,
            X: np.ndarray | None = None) -> Evaluator:
    evaluator = compile_lightgbm(model, num_iteration=num_iteration)
    X = _rows(model) if X is None else X
    report = verify(evaluator, _reference(booster, evaluator, num_iteration), X=X)
    assert report.ok, f"{evaluator.name}: {report}"
    # exact in practice: same additions in the same order, the same libm exp
    assert report.max_abs_diff <= 1e-12, report
    return evaluator


@pytest.mark.parametrize("name", list(MODELS))
def test_fast_path_equals_booster_predict(name: str, boosters: dict[str, lgb.Booster]) -> None:
    booster = boosters[name]
    model = _parsed(booster)
    evaluator = _agrees(booster, model)
    assert evaluator.n_features == N_FEATURES
    assert evaluator.name == (f"python-codegen:lightgbm[{len(model.trees)} trees, "
                              f"{model.objective.name if model.objective else None}]")
    assert evaluator.is_classifier == (name.startswith(("binary", "multi", "rf", "dart"))
                                       and name != "rf_regression")
    assert 1 <= evaluator.max_rows <= 256


def test_missing_types_are_exercised(boosters: dict[str, lgb.Booster]) -> None:
    def kinds(name: str) -> set[tuple[int, bool]]:
        return {(t.missing_type(i), t.default_left(i)) for t in _parsed(boosters[name]).trees
                for i in range(t.num_internal)}

    assert {(MISSING_NAN, True), (MISSING_NAN, False)} <= kinds("binary")
    assert {(MISSING_ZERO, True), (MISSING_ZERO, False)} <= kinds("binary_zero_as_missing")


def test_probabilities_shape_and_labels(boosters: dict[str, lgb.Booster]) -> None:
    X = _rows(_parsed(boosters["multiclass"]))[:50]
    labels, proba = compile_lightgbm(_parsed(boosters["multiclass"])).predict(X)
    assert proba is not None and proba.shape == (50, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert set(labels.tolist()) <= {0, 1, 2} and (labels == proba.argmax(axis=1)).all()
    labels, proba = compile_lightgbm(_parsed(boosters["binary"])).predict(X)
    assert proba is not None and proba.shape == (50, 2)
    np.testing.assert_allclose(proba[:, 0], 1.0 - proba[:, 1])
    values, none = compile_lightgbm(_parsed(boosters["regression"])).predict(X)
    assert none is None and values.shape == (50,) and values.dtype == np.float64


def test_early_stopped_model_with_num_iteration() -> None:
    X, signal = _data(1500, seed=4)
    y = (signal + np.random.default_rng(4).normal(scale=2.0, size=len(signal)) > 0)
    train = lgb.Dataset(X[:1000], y[:1000].astype(int))
    valid = lgb.Dataset(X[1000:], y[1000:].astype(int), reference=train)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 31,
                         "learning_rate": 0.3, "num_threads": 1}, train,
                        num_boost_round=300, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(5, verbose=False)],
                        keep_training_booster=True)
    best = booster.best_iteration
    assert 0 < best < booster.current_iteration()
    model = _parsed(booster)  # all iterations
    limited = _agrees(booster, model, num_iteration=best)
    assert limited.name.startswith(f"python-codegen:lightgbm[{best} trees")
    full = _agrees(booster, model, num_iteration=-1)  # <= 0 means all, as in LightGBM
    X = _rows(model)[:200]
    assert not np.allclose(limited.predict(X)[1], full.predict(X)[1])  # they do differ
    beyond = compile_lightgbm(model, num_iteration=10_000)
    assert beyond.name == full.name


def test_rf_averages_over_the_iterations_used(boosters: dict[str, lgb.Booster]) -> None:
    booster = boosters["rf_regression"]
    _agrees(booster, _parsed(booster), num_iteration=7)


def test_inputs_are_not_rounded_to_float32(boosters: dict[str, lgb.Booster]) -> None:
    booster = boosters["regression"]
    model = _parsed(booster)
    X = _rows(model)[2000:3000]  # just above thresholds: float32 rounds many onto them
    rounded = X.astype(np.float32).astype(np.float64)
    assert (booster.predict(X, num_threads=1) != booster.predict(rounded, num_threads=1)).any()
    _agrees(booster, model, X=X)
    _agrees(booster, model, X=X.astype(np.float32))  # float32 input is read as such


def test_integer_input_is_cast_to_float32_like_lightgbm() -> None:
    # threshold 16777216.5: int 16777217 is 16777216.0 in float32 (LightGBM's cast)
    model_text = _stump("16777216.5", 0)
    booster = lgb.Booster(model_str=model_text)
    evaluator = compile_lightgbm(parse_model_text(model_text.encode()))
    X = np.array([[16777217, 0], [16777218, 0], [3, 0]], dtype=np.int64)
    assert booster.predict(X, num_threads=1).tolist() == [-1.0, 1.0, -1.0]
    assert evaluator.predict(X)[0].tolist() == [-1.0, 1.0, -1.0]


def _stump(threshold: str, decision_type: int, objective: str = "regression") -> str:
    """A one-split model: x0 <= threshold -> -1, else 1."""
    body = "\n".join(["num_leaves=2", "num_cat=0", "split_feature=0", "split_gain=1",
                      f"threshold={threshold}", f"decision_type={decision_type}",
                      "left_child=-1", "right_child=-2", "leaf_value=-1 1", "is_linear=0",
                      "shrinkage=1"])
    block = f"Tree=0\n{body}\n\n\n"
    return ("tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
            f"max_feature_idx=1\nobjective={objective}\nfeature_names=a b\n"
            f"feature_infos=none none\ntree_sizes={len(block)}\n\n{block}end of trees\n")


@pytest.mark.parametrize("threshold", [
    "0", "1e-37", "-1e-37", "1.0000000180025095e-35", "-1.0000000180025095e-35",
    "1.0000000180025097e-35", "-2e-35", "2e-35", "0.5", "-0.5", "inf", "-inf",
    "1.7976931348623157e+308"])
@pytest.mark.parametrize("decision_type", [0, 2, 4, 6, 8, 10])
def test_zero_band_and_missing_rules_match_lightgbm(threshold: str, decision_type: int) -> None:
    """Each (threshold, missing type, default side) against LightGBM itself, on the values
    where LightGBM's zero rules bite (|x| <= kZeroThreshold reads as 0)."""
    text = _stump(threshold, decision_type)
    booster = lgb.Booster(model_str=text)
    evaluator = compile_lightgbm(parse_model_text(text.encode()))
    edge = [0.0, -0.0, 5e-36, -5e-36, K_ZERO, -K_ZERO, np.nextafter(K_ZERO, 1),
            np.nextafter(-K_ZERO, -1), 1e-37, -1e-37, 1e-300, -1e-300, 2e-35, -2e-35,
            0.5, -0.5, np.nextafter(0.5, 1), 1e308, -1e308]
    X = np.array([[v, 0.0] for v in edge])
    np.testing.assert_array_equal(evaluator.predict(X)[0], booster.predict(X, num_threads=1))


def test_non_finite_and_misshapen_inputs(boosters: dict[str, lgb.Booster]) -> None:
    evaluator = compile_lightgbm(_parsed(boosters["binary"]))
    row = np.zeros((1, N_FEATURES))
    row[0, 1] = np.nan
    assert evaluator.as_rows(row) is None
    assert evaluator.as_rows(np.vstack([np.zeros((2, N_FEATURES)), row])) is None
    big = np.zeros((3, N_FEATURES))
    big[1, 0] = np.inf
    with pytest.raises(OverflowError):
        evaluator.predict(big)
    with pytest.raises(ValueError, match=r"expected \(rows, 6\) input"):
        evaluator.predict(np.zeros((2, 5)))
    # doubles beyond float32's range are fine here (LightGBM reads doubles)
    wide = np.full((1, N_FEATURES), 1e300)
    assert evaluator.as_rows(wide) == [[1e300] * N_FEATURES]


def test_max_rows_shrinks_with_the_work_per_row(boosters: dict[str, lgb.Booster]) -> None:
    small = compile_lightgbm(_parsed(boosters["binary"]), num_iteration=2)
    large = compile_lightgbm(_parsed(boosters["binary"]))
    assert small.max_rows > large.max_rows >= 1


# --------------------------------------------------------------------------- refused


def _categorical() -> lgb.Booster:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(800, 3))
    X[:, 2] = rng.integers(0, 12, 800)
    y = ((X[:, 2] % 3 == 0) ^ (X[:, 0] > 0)).astype(int)
    return lgb.train({"objective": "binary", "verbose": -1, "min_data_per_group": 5,
                      "cat_smooth": 1, "max_cat_to_onehot": 2, "num_threads": 1},
                     lgb.Dataset(X, y, categorical_feature=[2]), num_boost_round=5)


REFUSED: dict[str, tuple[Callable[[], lgb.Booster], str]] = {
    "categorical": (_categorical, r"categorical splits are not supported"),
    "linear_tree": (lambda: _train({"objective": "regression", "linear_tree": True},
                                   lambda s: s, rounds=5), r"linear trees are not supported"),
    "lambdarank": (lambda: lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_threads": 1},
        lgb.Dataset(_data()[0], np.digitize(_data()[1], [0, 1]), group=[500] * 3), 3),
        r"objective 'lambdarank' is not supported"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unsupported_models_are_not_compilable(name: str) -> None:
    make, message = REFUSED[name]
    with pytest.raises(NotCompilable, match=message):
        compile_lightgbm(_parsed(make()))


def test_custom_objective_is_not_compilable(boosters: dict[str, lgb.Booster]) -> None:
    text = boosters["regression"].model_to_string()
    custom = "\n".join(ln for ln in text.split("\n") if not ln.startswith("objective="))
    with pytest.raises(NotCompilable, match="custom objective"):
        compile_lightgbm(parse_model_text(custom.encode()))


def test_size_limits_are_not_compilable(boosters: dict[str, lgb.Booster],
                                        monkeypatch: Any) -> None:
    model = _parsed(boosters["binary"])
    monkeypatch.setattr(lgb_trees, "MAX_TOTAL_NODES", 100)
    with pytest.raises(NotCompilable, match="more than 100 nodes"):
        compile_lightgbm(model)
    monkeypatch.undo()
    depth = 90  # beyond the code generator's MAX_DEPTH (Python's parser nests per level)
    chain = _chain(depth)
    with pytest.raises(NotCompilable, match="deeper than"):
        compile_lightgbm(parse_model_text(chain.encode()))


def _chain(depth: int) -> str:
    left = " ".join(str(~i) for i in range(depth))
    right = " ".join(str(i + 1) if i + 1 < depth else str(~depth) for i in range(depth))
    body = "\n".join([f"num_leaves={depth + 1}", "num_cat=0",
                      "split_feature=" + " ".join(["0"] * depth),
                      "threshold=" + " ".join(str(i) for i in range(depth)),
                      "decision_type=" + " ".join(["2"] * depth), f"left_child={left}",
                      f"right_child={right}", "leaf_value=" + " ".join(["0.5"] * (depth + 1)),
                      "is_linear=0", "shrinkage=1"])
    block = f"Tree=0\n{body}\n\n\n"
    return ("tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
            "max_feature_idx=0\nobjective=regression\nfeature_names=a\nfeature_infos=none\n"
            f"tree_sizes={len(block)}\n\n{block}end of trees\n")


def test_a_wrong_fast_path_is_caught(boosters: dict[str, lgb.Booster]) -> None:
    """The agreement check has teeth: an evaluator that rounds inputs to float32 (as the
    base class does) disagrees with LightGBM on the rows next to thresholds."""
    booster = boosters["regression"]
    model = _parsed(booster)
    evaluator = compile_lightgbm(model)
    rounding = type("Rounding", (type(evaluator),), {"as_rows": Evaluator.as_rows})
    wrong = rounding.__new__(rounding)
    wrong.__dict__.update(evaluator.__dict__)
    report = verify(wrong, _reference(booster, wrong, None), X=_rows(model)[2000:4000])
    assert not report.ok and report.max_abs_diff > PROBA_ATOL
