"""The LightGBM text-model checker: it accepts what LightGBM 4.x writes (and reads the same
numbers as `Booster.dump_model()` shows), refuses hostile edits by name, and nothing it
accepts crashes LightGBM (fuzzed, with LightGBM in a subprocess so a crash fails a test
instead of killing pytest)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from serving_runtime.models.runtimes.lightgbm.model_file import (
    MISSING_NAN,
    MISSING_NONE,
    MISSING_ZERO,
    LightGBMModel,
    Tree,
    parse_model_text,
)
from serving_runtime.models.runtimes.native_errors import ModelFileError

K_ZERO = float(np.float32(1e-35))
_MISSING = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}


# --------------------------------------------------------------------------- models


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with NaN (col 1) and exact zeros (col 2), so all missing types appear."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[rng.random(n) < 0.2, 1] = np.nan
    X[rng.random(n) < 0.3, 2] = 0.0
    signal = X[:, 0] + np.nan_to_num(X[:, 1]) + (X[:, 2] == 0) - 0.5 * X[:, 3]
    return X, signal


def _train(params: dict[str, Any], y_kind: str = "binary", rounds: int = 8,
           **dataset: Any) -> lgb.Booster:
    X, signal = _data()
    y: np.ndarray
    if y_kind == "binary":
        y = (signal > 0).astype(int)
    elif y_kind == "multi":
        y = np.digitize(signal, [-0.5, 0.8])
    elif y_kind == "positive":
        y = np.exp(signal / 3)
    else:
        y = signal
    X = dataset.pop("X", X)
    base = {"verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5, "num_threads": 1,
            "seed": 0, "deterministic": True}
    return lgb.train({**base, **params}, lgb.Dataset(X, y, **dataset),
                     num_boost_round=rounds)


def _categorical() -> lgb.Booster:
    """Several categorical splits per tree, bitsets of two 32-bit words (40 categories)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1500, 3))
    X[:, 2] = rng.integers(0, 40, 1500)
    y = ((X[:, 2] % 3 == 0) ^ (X[:, 0] > 0) ^ (X[:, 2] > 20)).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 8, "min_data_per_group": 5,
              "cat_smooth": 1, "min_data_in_leaf": 5, "max_cat_to_onehot": 2,
              "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=[2]), num_boost_round=5)


def _early_stopped() -> lgb.Booster:
    X, signal = _data(600, seed=1)
    y = (signal + np.random.default_rng(1).normal(scale=1.5, size=len(signal)) > 0)
    train = lgb.Dataset(X[:400], y[:400].astype(int))
    valid = lgb.Dataset(X[400:], y[400:].astype(int), reference=train)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15,
                         "learning_rate": 0.3, "num_threads": 1}, train,
                        num_boost_round=200, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(3, verbose=False)],
                        keep_training_booster=True)  # else train() keeps the best only
    assert 0 < booster.best_iteration < booster.current_iteration()
    return booster


MODELS: dict[str, Callable[[], lgb.Booster]] = {
    "binary": lambda: _train({"objective": "binary"}),
    "binary_sigmoid": lambda: _train({"objective": "binary", "sigmoid": 0.7}),
    "multiclass": lambda: _train({"objective": "multiclass", "num_class": 3}, "multi"),
    "multiclassova": lambda: _train({"objective": "multiclassova", "num_class": 3}, "multi"),
    "l2": lambda: _train({"objective": "regression"}, "real"),
    "l2_sqrt": lambda: _train({"objective": "regression", "reg_sqrt": True}, "positive"),
    "l1": lambda: _train({"objective": "regression_l1"}, "real"),
    "huber": lambda: _train({"objective": "huber"}, "real"),
    "poisson": lambda: _train({"objective": "poisson"}, "positive"),
    "gamma": lambda: _train({"objective": "gamma"}, "positive"),
    "tweedie": lambda: _train({"objective": "tweedie"}, "positive"),
    "zero_as_missing": lambda: _train({"objective": "binary", "zero_as_missing": True}),
    "no_missing": lambda: _train({"objective": "binary", "use_missing": False}),
    "categorical": _categorical,
    "rf": lambda: _train({"objective": "binary", "boosting": "rf", "bagging_freq": 1,
                          "bagging_fraction": 0.7}),
    "dart": lambda: _train({"objective": "binary", "boosting": "dart", "drop_rate": 0.5}),
    "linear_tree": lambda: _train({"objective": "regression", "linear_tree": True}, "real"),
    "constraints": lambda: _train({"objective": "binary", "monotone_constraints":
                                   [1, 0, 0, -1, 0], "interaction_constraints": [[0, 1],
                                                                                 [2, 3, 4]]}),
    "lambdarank": lambda: _train({"objective": "lambdarank"}, "multi", group=[100] * 4),
    "early_stopping": _early_stopped,
}


@pytest.fixture(scope="module")
def boosters() -> dict[str, lgb.Booster]:
    return {name: make() for name, make in MODELS.items()}


@pytest.fixture(scope="module")
def binary_text(boosters: dict[str, lgb.Booster]) -> str:
    return str(boosters["binary"].model_to_string())


@pytest.fixture(scope="module")
def categorical_text(boosters: dict[str, lgb.Booster]) -> str:
    return str(boosters["categorical"].model_to_string())


# --------------------------------------------------------------------------- accepted


def _json_nodes(tree: Tree, node: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """dump_model's nested nodes as ("node", split_index, json) / ("leaf", ...)."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if "split_index" in n:
            out.append(("node", n["split_index"], n))
            stack += [n["left_child"], n["right_child"]]
        else:
            out.append(("leaf", n.get("leaf_index", 0), n))
    return out


def _categories(tree: Tree, node: int) -> list[int]:
    k = int(tree.threshold[node])
    words = tree.cat_threshold[tree.cat_boundaries[k]:tree.cat_boundaries[k + 1]]
    return [32 * w + b for w, word in enumerate(words) for b in range(32) if word >> b & 1]


def _assert_same_as_dump(model: LightGBMModel, dump: dict[str, Any]) -> None:
    assert model.version == dump["version"]
    assert model.num_class == dump["num_class"]
    assert model.num_tree_per_iteration == dump["num_tree_per_iteration"]
    assert model.max_feature_idx == dump["max_feature_idx"]
    assert model.average_output == dump["average_output"]
    assert list(model.feature_names) == dump["feature_names"]
    assert (model.objective.text if model.objective else None) == dump.get("objective")
    assert list(model.monotone_constraints) == dump["monotone_constraints"]
    assert len(model.trees) == len(dump["tree_info"])
    for tree, info in zip(model.trees, dump["tree_info"], strict=True):
        assert (tree.num_leaves, tree.num_cat) == (info["num_leaves"], info["num_cat"])
        assert tree.shrinkage == pytest.approx(info["shrinkage"], rel=1e-5)
        seen = 0
        for kind, i, n in _json_nodes(tree, info["tree_structure"]):
            seen += 1
            if kind == "leaf":
                assert tree.leaf_value[i] == n["leaf_value"]  # 17 digits both ways: exact
                if tree.is_linear:
                    assert tree.leaf_const[i] == n["leaf_const"]
                    assert list(tree.leaf_features[i]) == n["leaf_features"]
                    assert list(tree.leaf_coeff[i]) == n["leaf_coeff"]
                continue
            assert tree.split_feature[i] == n["split_feature"]
            assert tree.missing_type(i) == _MISSING[n["missing_type"]]
            if n["decision_type"] == "==":
                assert tree.is_categorical(i)
                assert _categories(tree, i) == [int(c) for c in n["threshold"].split("||")]
            else:
                assert not tree.is_categorical(i)
                assert tree.threshold[i] == n["threshold"]
                assert tree.default_left(i) == n["default_left"]
        assert seen == 2 * tree.num_leaves - 1


@pytest.mark.parametrize("name", list(MODELS))
def test_every_kind_of_model_parses_as_dump_model_shows_it(
        name: str, boosters: dict[str, lgb.Booster]) -> None:
    booster = boosters[name]
    model = parse_model_text(booster.model_to_string(num_iteration=-1).encode())
    _assert_same_as_dump(model, booster.dump_model(num_iteration=-1))
    assert model.has_pandas_categorical and model.pandas_categorical is None
    assert dict(model.parameters)["num_threads"] == "1"
    assert model.ignored_header_keys == ()


def test_model_features_appear_where_expected(boosters: dict[str, lgb.Booster]) -> None:
    def parsed(name: str) -> LightGBMModel:
        return parse_model_text(boosters[name].model_to_string().encode())

    def missing(model: LightGBMModel) -> set[tuple[int, bool]]:
        return {(t.missing_type(i), t.default_left(i)) for t in model.trees
                for i in range(t.num_internal)}

    assert {(MISSING_NAN, True), (MISSING_NAN, False)} <= missing(parsed("binary"))
    assert {(MISSING_ZERO, True), (MISSING_ZERO, False)} & missing(parsed("zero_as_missing"))
    assert any(t.num_cat for t in parsed("categorical").trees)
    assert any(any(t.leaf_coeff) for t in parsed("linear_tree").trees)
    rf = parsed("rf")
    assert rf.average_output and rf.objective is not None and rf.objective.name == "binary"
    sig = parsed("binary_sigmoid").objective
    assert sig is not None and sig.sigmoid == 0.7
    multi = parsed("multiclass")
    assert (multi.num_class, len(multi.trees) % 3, multi.objective and multi.objective.num_class
            ) == (3, 0, 3)
    sqrt = parsed("l2_sqrt").objective
    assert sqrt is not None and sqrt.sqrt and sqrt.name == "regression"
    assert parsed("constraints").monotone_constraints == (1, 0, 0, -1, 0)


def test_early_stopped_model_saves_best_iteration(boosters: dict[str, lgb.Booster]) -> None:
    booster = boosters["early_stopping"]
    best = parse_model_text(booster.model_to_string().encode())
    full = parse_model_text(booster.model_to_string(num_iteration=-1).encode())
    assert len(best.trees) == booster.best_iteration
    assert len(full.trees) == booster.current_iteration() > len(best.trees)
    assert best.trees == full.trees[: len(best.trees)]


def test_pandas_categorical_and_feature_names() -> None:
    import pandas as pd  # a dev dependency: the DataFrame path users train with
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x é": rng.normal(size=300),
                          "colour": pd.Categorical(rng.choice(["red", "blue", "green"], 300))})
    y = ((frame["colour"] == "red") ^ (frame["x é"] > 0)).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "min_data_per_group": 5,
                         "cat_smooth": 1, "num_threads": 1}, lgb.Dataset(frame, y), 3)
    model = parse_model_text(booster.model_to_string().encode())
    assert model.pandas_categorical == (("blue", "green", "red"),)
    assert model.feature_names == ("x_é", "colour")  # LightGBM replaced the space


def test_pandas_categorical_line_is_read_like_the_python_package(binary_text: str) -> None:
    line = 'pandas_categorical:[["a", "b"], [1, 2, 3]]'
    text = binary_text.replace("pandas_categorical:null", line)
    model = parse_model_text(text.encode())
    assert model.pandas_categorical == (("a", "b"), (1, 2, 3))
    assert lgb.Booster(model_str=text).pandas_categorical == [["a", "b"], [1, 2, 3]]
    # a pandas line the Python package does not find (not last) is refused, not ignored
    with pytest.raises(ModelFileError, match="unexpected line|not where"):
        parse_model_text((text + "\n" * 30).encode())
    no_pandas = parse_model_text(binary_text.replace("\npandas_categorical:null\n", "")
                                 .encode())
    assert not no_pandas.has_pandas_categorical


def test_parsing_a_model_file_from_disk(tmp_path: Any, binary_text: str) -> None:
    path = tmp_path / "model.txt"
    lgb.Booster(model_str=binary_text).save_model(str(path))
    assert parse_model_text(path.read_bytes()).trees == parse_model_text(
        binary_text.encode()).trees


# --------------------------------------------------------------------------- hostile


def fix_tree_sizes(text: str) -> str:
    """Recompute tree_sizes after an edit, so a test reaches the check it aims at."""
    start = text.find("\nTree=0\n") + 1
    end = text.find("end of trees\n")
    if start <= 0 or end < 0:
        return text
    blocks = re.split(r"(?m)^(?=Tree=\d+$)", text[start:end])
    sizes = " ".join(str(len(b.encode())) for b in blocks if b)
    head = re.sub(r"(?m)^tree_sizes=.*$", "tree_sizes=" + sizes, text[:start], count=1)
    return head + text[start:]


def _tree_line(text: str, tree: int, key: str) -> str:
    block = text[text.index(f"\nTree={tree}\n"):]
    m = re.search(rf"(?m)^{key}=.*$", block)
    assert m is not None
    return m.group(0)


def _edit_tree(text: str, tree: int, key: str, edit: Callable[[list[str]], list[str]]) -> str:
    line = _tree_line(text, tree, key)
    values = line.split("=", 1)[1].split()
    new = f"{key}=" + " ".join(edit(values))
    i = text.index(f"\nTree={tree}\n")
    return fix_tree_sizes(text[:i] + text[i:].replace(line, new, 1))


def _set(j: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(values: list[str]) -> list[str]:
        values[j] = value
        return values
    return edit


def _cut_at(marker: str, extra: int = 0) -> Callable[[str], str]:
    return lambda t: t[: t.index(marker) + extra]


def _internal_child_to(t: str, target: int) -> str:
    """left_child of the first node whose right child is internal, set to `target`."""
    left = _tree_line(t, 0, "left_child").split("=")[1].split()
    right = _tree_line(t, 0, "right_child").split("=")[1].split()
    node = next(i for i in range(len(left)) if int(right[i]) > 0 and int(left[i]) < 0)
    return _edit_tree(t, 0, "left_child", _set(node, str(target if target >= 0 else
                                                        right[node])))


HOSTILE: dict[str, tuple[Callable[[str], str], str]] = {
    "truncated in the header": (_cut_at("feature_infos="), r"missing feature_infos|no `Tree="),
    "truncated inside a tree": (_cut_at("\nTree=2\n", 40), r"Tree=2: tree_sizes\[2\]=\d+ runs "
                                                          r"past the end"),
    "truncated before end of trees": (_cut_at("end of trees"), r"`end of trees`"),
    "truncated in the parameters": (_cut_at("[max_depth"), r"no `end of parameters`"),
    "truncated in pandas_categorical": (lambda t: t.rstrip()[:-2],
                                        r"pandas_categorical: not valid JSON"),
    "child index out of range": (
        lambda t: _edit_tree(t, 0, "left_child", _set(0, "40")),
        r"Tree=0: left_child\[0\] is 40; the tree has 6 internal nodes"),
    "leaf index out of range": (
        lambda t: _edit_tree(t, 0, "right_child", _set(0, "-9")),
        r"Tree=0: right_child\[0\] is -9, leaf 8; the tree has 7 leaves"),
    "cycle to the root": (lambda t: _edit_tree(t, 0, "left_child", _set(1, "0")),
                          r"Tree=0: left_child\[1\] is 0, the root \(a cycle\)"),
    "shared child": (lambda t: _internal_child_to(t, -1),
                     r"Tree=0: node \d+ is reached twice from the root"),
    "cycle among internal nodes": (
        lambda t: _edit_tree(t, 0, "right_child", lambda v: [
            str(int(c)) if int(c) < 0 or i != max(i for i, x in enumerate(v) if int(x) > 0)
            else "1" for i, c in enumerate(v)]),
        r"Tree=0: (node \d+ is reached twice|node \d+ is not reachable)"),
    "split_feature beyond max_feature_idx": (
        lambda t: _edit_tree(t, 1, "split_feature", _set(2, "5")),
        r"Tree=1: split_feature\[2\] is 5, outside \[0, 4\]"),
    "negative split_feature": (lambda t: _edit_tree(t, 1, "split_feature", _set(0, "-1")),
                               r"Tree=1: split_feature\[0\] is -1, outside"),
    "negative num_leaves": (lambda t: _edit_tree(t, 0, "num_leaves", lambda v: ["-5"]),
                            r"Tree=0: num_leaves is -5, outside \[1, "),
    "zero num_leaves": (lambda t: _edit_tree(t, 0, "num_leaves", lambda v: ["0"]),
                        r"Tree=0: num_leaves is 0"),
    "huge num_leaves": (lambda t: _edit_tree(t, 0, "num_leaves", lambda v: ["2000000000"]),
                        r"Tree=0: num_leaves is 2000000000, outside \[1, 131072\]"),
    "NaN leaf value": (lambda t: _edit_tree(t, 1, "leaf_value", _set(3, "nan")),
                       r"Tree=1: leaf_value\[3\] is 'nan', not a decimal number"),
    "infinite leaf value": (lambda t: _edit_tree(t, 1, "leaf_value", _set(3, "1e999")),
                            r"Tree=1: leaf_value\[3\] is '1e999'; it must be finite"),
    "overflowing threshold": (lambda t: _edit_tree(t, 1, "threshold", _set(2, "-1e999")),
                              r"Tree=1: threshold\[2\] is '-1e999'; it must be finite"),
    "NaN threshold": (lambda t: _edit_tree(t, 0, "threshold", _set(0, "nan")),
                      r"Tree=0: threshold\[0\] is 'nan'"),
    "leaf_value too short": (lambda t: _edit_tree(t, 2, "leaf_value", lambda v: v[:-1]),
                             r"Tree=2: leaf_value has 6 values; the tree needs 7"),
    "left_child too long": (lambda t: _edit_tree(t, 2, "left_child", lambda v: v + ["-1"]),
                            r"Tree=2: left_child has 7 values; the tree needs 6"),
    "bad decision_type": (lambda t: _edit_tree(t, 0, "decision_type", _set(0, "12")),
                          r"Tree=0: decision_type\[0\] is 12: missing type 3"),
    "decision_type bits beyond the known ones": (
        lambda t: _edit_tree(t, 0, "decision_type", _set(0, "16")),
        r"Tree=0: decision_type\[0\] is 16, outside \[0, 15\]"),
    "categorical bit without num_cat": (
        lambda t: _edit_tree(t, 0, "decision_type", _set(0, "1")),
        r"Tree=0: num_cat=0 but 1 nodes are categorical"),
    "huge num_class": (lambda t: t.replace("num_class=1\n", "num_class=100000000\n"),
                       r"header: num_class is 100000000, outside \[1, 65536\]"),
    "num_tree_per_iteration 0": (
        lambda t: t.replace("num_tree_per_iteration=1\n", "num_tree_per_iteration=0\n"),
        r"num_tree_per_iteration is 0"),
    "objective num_class above the header's": (
        lambda t: t.replace("objective=binary sigmoid:1", "objective=multiclass num_class:9"),
        r"objective num_class:9 differs from num_class=1"),
    "empty objective": (lambda t: t.replace("objective=binary sigmoid:1", "objective="),
                        r"objective '' is not an objective LightGBM knows"),
    "unknown objective": (lambda t: t.replace("objective=binary sigmoid:1", "objective=x"),
                          r"objective 'x' is not an objective"),
    "zero sigmoid": (lambda t: t.replace("sigmoid:1\n", "sigmoid:0\n", 1),
                     r"sigmoid is 0.0; it must be > 0"),
    "non-UTF-8": (lambda t: t.replace("Column_3", "Column_\xff").encode("latin-1").decode(
        "utf-8", "surrogateescape"), r"not UTF-8 text: invalid byte 0xff"),
    "NUL byte": (lambda t: t.replace("label_index=0", "label_index=0\x00"),
                 r"line 5: control character '\\x00'"),
    "CRLF line ends": (lambda t: t.replace("\n", "\r\n"), r"line 1: a carriage return"),
    "missing end of trees": (lambda t: t.replace("end of trees\n", ""),
                             r"where `end of trees` belongs"),
    "wrong tree_sizes": (lambda t: re.sub(r"tree_sizes=(\d+)", lambda m: "tree_sizes="
                                          + str(int(m.group(1)) - 1), t, count=1),
                         r"Tree=1: tree_sizes points at '', not `Tree=1`"),
    "tree_sizes beyond the file": (lambda t: re.sub(r"tree_sizes=(\d+)", "tree_sizes="
                                                    "9999999999", t, count=1),
                                   r"Tree=0: tree_sizes\[0\]=9999999999 runs past the end"),
    "duplicated tree key": (
        lambda t: fix_tree_sizes(t.replace("\nshrinkage=1\n", "\nshrinkage=1\nshrinkage=1\n",
                                           1)), r"Tree=0: shrinkage appears twice"),
    "unknown tree key": (lambda t: fix_tree_sizes(t.replace("\nshrinkage=", "\nfoo=1\n"
                                                            "shrinkage=", 1)),
                         r"Tree=0: unknown key 'foo'"),
    "tree line without =": (lambda t: fix_tree_sizes(t.replace("\nis_linear=0\n",
                                                               "\nis_linear\n", 1)),
                            r"Tree=0: line 'is_linear' is not key=value"),
    "feature_names count": (lambda t: t.replace("Column_4\n", "Column_4 extra\n", 1),
                            r"feature_names has 6 entries; max_feature_idx says 5"),
    "parameter line without a colon": (lambda t: t.replace("[boosting: gbdt]", "boosting"),
                                       r"parameters: line 'boosting' is not `\[name: value\]`"),
    "parameter value with a quote": (lambda t: t.replace("[boosting: gbdt]",
                                                         '[boosting: "x]'),
                                     r"boosting value '\"x' has a quote"),
    "numeric parameter that is not a number": (
        lambda t: t.replace("[learning_rate: 0.1]", "[learning_rate: fast]"),
        r"parameters: learning_rate is 'fast', not a number"),
    "pandas_categorical not a list of lists": (
        lambda t: t.replace("pandas_categorical:null", 'pandas_categorical:{"a": 1}'),
        r"pandas_categorical: not a list of category lists"),
    "text after the trailer": (lambda t: t + "Tree=9\n", r"unexpected line 'Tree=9'"),
    "first line": (lambda t: "forest" + t[4:], r"line 1 is 'forest', not `tree`"),
    "ambiguous header line": (lambda t: t.replace("label_index=0", "label_index==0"),
                              r"reads differently in LightGBM"),
    "duplicate header key": (lambda t: t.replace("label_index=0", "label_index=0\n"
                                                 "label_index=1"),
                             r"label_index appears twice"),
    "tree count not a multiple": (
        lambda t: t.replace("num_class=1\n", "num_class=3\n").replace(
            "num_tree_per_iteration=1", "num_tree_per_iteration=3").replace(
            "objective=binary sigmoid:1", "objective=multiclass num_class:3"),
        r"8 trees is not a multiple of num_tree_per_iteration=3"),
}


def _raw_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_edits_are_refused_by_name(name: str, binary_text: str) -> None:
    mutate, message = HOSTILE[name]
    mutated = mutate(binary_text)
    assert mutated != binary_text
    with pytest.raises(ModelFileError, match=message):
        parse_model_text(_raw_bytes(mutated))


CATEGORICAL_HOSTILE: dict[str, tuple[Callable[[str], str], str]] = {
    "cat_boundaries decreasing": (
        lambda t: _edit_tree(t, 0, "cat_boundaries", lambda v: v[:1] + ["5"] + v[2:]),
        r"Tree=0: cat_boundaries\[2\]=\d+ is below cat_boundaries\[1\]=5"),
    "cat_boundaries past cat_threshold": (
        lambda t: _edit_tree(t, 0, "cat_boundaries", lambda v: v[:-1] + [str(int(v[-1]) + 1)]),
        r"Tree=0: cat_threshold has \d+ values; the tree needs \d+"),
    "negative cat_boundaries": (lambda t: _edit_tree(t, 0, "cat_boundaries", _set(1, "-5")),
                                r"Tree=0: cat_boundaries\[1\] is -5, outside"),
    "huge cat_boundaries": (lambda t: _edit_tree(t, 0, "cat_boundaries",
                                                 lambda v: v[:-1] + ["2000000000"]),
                            r"Tree=0: the model exceeds 5,000,000 nodes"),
    "cat_boundaries not from 0": (lambda t: _edit_tree(t, 0, "cat_boundaries", _set(0, "1")),
                                  r"Tree=0: cat_boundaries\[0\] is 1, not 0"),
    "categorical threshold beyond num_cat": (
        lambda t: _edit_tree(t, 0, "threshold", lambda v: [
            "77" if i == _first_categorical(t) else x for i, x in enumerate(v)]),
        r"Tree=0: threshold\[\d+\] of a categorical node is 77; num_cat is \d+"),
    "fractional categorical threshold": (
        lambda t: _edit_tree(t, 0, "threshold", lambda v: [
            "0.5" if i == _first_categorical(t) else x for i, x in enumerate(v)]),
        r"of a categorical node is 0.5, not a cat_boundaries index"),
    "bitset word beyond 32 bits": (lambda t: _edit_tree(t, 0, "cat_threshold",
                                                        _set(0, str(2**32))),
                                   r"Tree=0: cat_threshold\[0\] is 4294967296, outside"),
}


def _first_categorical(text: str) -> int:
    types = _tree_line(text, 0, "decision_type").split("=")[1].split()
    return next(i for i, v in enumerate(types) if int(v) & 1)


@pytest.mark.parametrize("name", list(CATEGORICAL_HOSTILE))
def test_hostile_categorical_edits_are_refused(name: str, categorical_text: str) -> None:
    mutate, message = CATEGORICAL_HOSTILE[name]
    with pytest.raises(ModelFileError, match=message):
        parse_model_text(_raw_bytes(mutate(categorical_text)))


def test_linear_leaf_features_are_bounded(boosters: dict[str, lgb.Booster]) -> None:
    text = boosters["linear_tree"].model_to_string()
    tree = next(i for i, t in enumerate(parse_model_text(text.encode()).trees)
                if any(t.leaf_features))
    bad = _edit_tree(text, tree, "leaf_features", _set(0, "99"))
    with pytest.raises(ModelFileError, match=rf"Tree={tree}: leaf_features\[0\] is 99"):
        parse_model_text(bad.encode())
    short = _edit_tree(text, tree, "leaf_coeff", lambda v: v[:-1])
    with pytest.raises(ModelFileError, match=rf"Tree={tree}: leaf_coeff has \d+ values"):
        parse_model_text(short.encode())


def _chain_model(depth: int) -> str:
    """One tree whose internal nodes form a chain `depth` long (node i: left = leaf i)."""
    left = " ".join(str(~i) for i in range(depth))
    right = " ".join(str(i + 1) if i + 1 < depth else str(~depth) for i in range(depth))
    body = "\n".join([
        f"num_leaves={depth + 1}", "num_cat=0", "split_feature=" + " ".join(["0"] * depth),
        "threshold=" + " ".join(str(i) for i in range(depth)),
        "decision_type=" + " ".join(["2"] * depth), f"left_child={left}",
        f"right_child={right}", "leaf_value=" + " ".join(["0.5"] * (depth + 1)),
        "is_linear=0", "shrinkage=1"])
    block = f"Tree=0\n{body}\n\n\n"
    return ("tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
            "max_feature_idx=0\nobjective=regression\nfeature_names=a\nfeature_infos=none\n"
            f"tree_sizes={len(block)}\n\n{block}end of trees\n")


def test_tree_depth_is_bounded() -> None:
    assert parse_model_text(_chain_model(1000).encode()).trees[0].depth == 1000
    # dump_model() would recurse 10,000 levels deep: SIGSEGV
    with pytest.raises(ModelFileError, match="Tree=0: the tree is 10000 levels deep"):
        parse_model_text(_chain_model(10_000).encode())


def test_node_budget_spans_all_trees(binary_text: str, monkeypatch: Any) -> None:
    from serving_runtime.models.runtimes.lightgbm import model_file

    monkeypatch.setattr(model_file, "MAX_TOTAL_NODES", 30)  # 8 trees of 13 nodes
    with pytest.raises(ModelFileError, match="Tree=2: the model exceeds 30 nodes"):
        parse_model_text(binary_text.encode())


def test_max_features_bound(binary_text: str) -> None:
    with pytest.raises(ModelFileError, match=r"max_feature_idx is 4, outside \[0, 3\]"):
        parse_model_text(binary_text.encode(), max_features=4)
    assert parse_model_text(binary_text.encode(), max_features=5).n_features == 5


def test_unknown_header_keys_are_tolerated_and_reported(binary_text: str) -> None:
    text = binary_text.replace("label_index=0\n", "label_index=0\nfuture_key=3\n")
    model = parse_model_text(text.encode())
    assert model.ignored_header_keys == ("future_key",)
    lgb.Booster(model_str=text)  # and LightGBM agrees they are harmless


def test_not_bytes_is_refused() -> None:
    with pytest.raises(ModelFileError, match="expected the model file's bytes"):
        parse_model_text("tree\n")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fuzz

_CHILD = r"""
import faulthandler, json, sys
import numpy as np
import lightgbm as lgb
job = json.load(sys.stdin)
X_all = np.array(job["X"], dtype=np.float64)
for i, text in job["models"]:
    print("start", i, flush=True)
    faulthandler.dump_traceback_later(20, exit=True)  # a predict that never ends
    try:
        booster = lgb.Booster(model_str=text)
        X = X_all[:, :booster.num_feature()]
        raw = booster.predict(X, raw_score=True, num_threads=1)
        print(json.dumps({"i": i, "raw": np.asarray(raw).reshape(len(X), -1).tolist()}),
              flush=True)
    except Exception as exc:
        print(json.dumps({"i": i, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    faulthandler.cancel_dump_traceback_later()
"""


def _reference_leaf(tree: Tree, x: list[float]) -> int:
    """LightGBM's Tree::GetLeaf for one row (after the zeroing of tiny values)."""
    node = 0
    while node >= 0 and tree.num_leaves > 1:
        f = x[tree.split_feature[node]]
        if tree.is_categorical(node):
            if math.isnan(f) or int(f) < 0:
                node = tree.right_child[node]
                continue
            k = int(tree.threshold[node])
            lo, hi = tree.cat_boundaries[k], tree.cat_boundaries[k + 1]
            word = int(f) // 32
            hit = word < hi - lo and tree.cat_threshold[lo + word] >> (int(f) % 32) & 1
            node = tree.left_child[node] if hit else tree.right_child[node]
            continue
        mt = tree.missing_type(node)
        if math.isnan(f) and mt != MISSING_NAN:
            f = 0.0
        if (mt == MISSING_ZERO and f == 0.0) or (mt == MISSING_NAN and math.isnan(f)):
            go_left = tree.default_left(node)
        else:
            go_left = f <= tree.threshold[node]
        node = tree.left_child[node] if go_left else tree.right_child[node]
    return ~node if tree.num_leaves > 1 else 0


def reference_raw(model: LightGBMModel, X: np.ndarray) -> np.ndarray:
    """Raw scores the parsed model means, as LightGBM's `predict(raw_score=True)`."""
    k = model.num_tree_per_iteration
    out = np.zeros((len(X), k))
    for r, row in enumerate(X.tolist()):
        x = [0.0 if abs(v) <= K_ZERO else v for v in row]
        for i, tree in enumerate(model.trees):
            leaf = _reference_leaf(tree, x)
            value = tree.leaf_value[leaf]
            if tree.is_linear:
                lin = tree.leaf_const[leaf]
                feats = [x[f] for f in tree.leaf_features[leaf]]
                if not any(math.isnan(v) for v in feats):
                    for c, v in zip(tree.leaf_coeff[leaf], feats, strict=True):
                        lin += c * v
                    value = lin
            out[r, i % k] += value
    return out  # raw_score=True: GBDT::PredictRaw does not average (boosting=rf)


def _mutate(text: str, rng: np.random.Generator) -> tuple[str, str]:
    lines = text.split("\n")
    nums = list(re.finditer(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text))
    tree_lines = [j for j, ln in enumerate(lines) if re.match(
        r"(left_child|right_child|split_feature|decision_type|threshold|cat_boundaries|"
        r"leaf_features|num_features)=\S+ \S", ln)]
    kind = int(rng.integers(0, 7))
    if (len(text) < 2 or len(lines) < 2 or (kind == 1 and not nums)
            or (kind == 6 and not tree_lines)):
        kind = 3  # (after stacked mutations) nothing of that kind left to mutate
    if kind == 0:  # one character replaced
        i = int(rng.integers(0, len(text)))
        c = str(rng.choice(list("0123456789- .=e\n:[]x")))
        out, what = text[:i] + c + text[i + 1:], f"char {i} -> {c!r}"
    elif kind == 1:  # one number token changed
        m = nums[int(rng.integers(0, len(nums)))]
        new = str(rng.choice(["0", "-1", "1", "7", "-8", "5", "6", "2147483648", "1e308",
                              "nan", "inf", "-0", str(int(rng.integers(-20, 20)))]))
        out, what = text[:m.start()] + new + text[m.end():], f"{m.group()!r}@{m.start()} -> {new}"
    elif kind == 2:  # a line deleted
        i = int(rng.integers(0, len(lines)))
        out, what = "\n".join(lines[:i] + lines[i + 1:]), f"line {i} deleted"
    elif kind == 3:  # a line duplicated
        i = int(rng.integers(0, len(lines)))
        out, what = "\n".join(lines[:i + 1] + lines[i:]), f"line {i} duplicated"
    elif kind == 4:  # two lines swapped
        i = int(rng.integers(0, len(lines) - 1))
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        out, what = "\n".join(lines), f"lines {i},{i + 1} swapped"
    elif kind == 5:  # truncated
        i = int(rng.integers(0, len(text)))
        out, what = text[:i], f"truncated at {i}"
    else:  # two array entries of a tree line swapped (structure-preserving lengths)
        j = tree_lines[int(rng.integers(0, len(tree_lines)))]
        key, values = lines[j].split("=", 1)
        vals = values.split()
        a, b = (int(v) for v in rng.integers(0, len(vals), 2))
        vals[a], vals[b] = vals[b], vals[a]
        lines[j] = key + "=" + " ".join(vals)
        out, what = "\n".join(lines), f"{key} entries {a},{b} swapped in line {j}"
    if rng.random() < 0.6:  # most mutations keep tree_sizes right, to reach deeper checks
        out, what = fix_tree_sizes(out), what + " (tree_sizes fixed)"
    return out, what


def test_fuzzed_models_are_refused_or_load_and_predict_as_parsed(
        boosters: dict[str, lgb.Booster]) -> None:
    rng = np.random.default_rng(20240611)
    bases = {name: str(boosters[name].model_to_string())
             for name in ("binary", "zero_as_missing", "categorical", "linear_tree",
                          "multiclass")}
    X = np.random.default_rng(5).normal(scale=2, size=(60, 5))
    X[::4, 1] = np.nan
    X[::3, 2] = 0.0
    X[:, 2][::5] = np.random.default_rng(6).integers(-1, 8, size=len(X[::5]))
    accepted: dict[int, tuple[str, str, LightGBMModel]] = {}
    refused = 0
    for i in range(200):
        name = list(bases)[i % len(bases)]
        text, what = _mutate(bases[name], rng)
        try:
            model = parse_model_text(text.encode())
        except ModelFileError:
            refused += 1
            continue
        accepted[i] = (f"{name}: {what}", text, model)
    assert refused > 50 and len(accepted) > 30  # both sides of the checker are exercised
    job = {"X": X.tolist(), "models": [[i, t] for i, (_, t, _) in accepted.items()]}
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(job),
                          capture_output=True, text=True, timeout=120)
    results = {}
    last_started = None
    for line in proc.stdout.splitlines():
        if line.startswith("start "):
            last_started = int(line.split()[1])
        elif line.startswith("{"):
            r = json.loads(line)
            results[r["i"]] = r
    if proc.returncode != 0:
        what = accepted[last_started][0] if last_started in accepted else "?"
        pytest.fail(f"LightGBM died (rc {proc.returncode}) on an accepted model: {what}\n"
                    f"{proc.stderr[-2000:]}")
    for i, (what, _, model) in accepted.items():
        r = results[i]
        assert "error" not in r, f"accepted but LightGBM refused it ({what}): {r['error']}"
        expected = reference_raw(model, X[:, : model.n_features])
        np.testing.assert_allclose(np.array(r["raw"]), expected, rtol=1e-9, atol=1e-12,
                                   err_msg=f"LightGBM reads {what} differently")
