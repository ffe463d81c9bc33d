"""LightGBM models (checked by model_file.parse_model_text) as generated Python code.

Semantics of LightGBM 4.x's predictor (`Booster.predict` on a numpy array):

- the Python package passes float32 and float64 arrays as they are (anything else is
  cast to float32) and the C++ side reads them as doubles: no rounding to float32;
- a value with |x| <= kZeroThreshold (1e-35f widened to double) is dropped from the row
  (RowPairFunctionFromDenseMatric) and so reads as 0.0;
- Tree::NumericalDecision: a node whose missing type is Zero sends a zero to its default
  side (default_left bit); otherwise `fval <= threshold` goes left. NaN rules only concern
  non-finite inputs, which `as_rows` refuses (the reference path decides those);
- each output k sums its trees' leaf values in tree order (tree i belongs to output
  i % num_tree_per_iteration), in double from 0.0; `average_output` (boosting=rf) divides
  by the number of iterations used; then the objective's ConvertOutput.

Each node's test folds the zero rule into one comparison chain (see `_numerical_test`),
so a row needs no preprocessing; the sums use Python floats (IEEE doubles, same order),
and the links use `math` (the C library's exp, like LightGBM's std::exp).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from serving_runtime.models.runtimes.lightgbm.model_file import (
    MISSING_ZERO,
    LightGBMModel,
    Tree,
)
from serving_runtime.models.trees.codegen import (
    MAX_TOTAL_NODES,
    FlatTree,
    NotCompilable,
    compile_functions,
    tree_block,
)
from serving_runtime.models.trees.evaluator import Evaluator

#: LightGBM's kZeroThreshold: `const double kZeroThreshold = 1e-35f;`
K_ZERO = float(np.float32(1e-35))
_CHUNK_LINES = 4000  # generated lines per function: keeps compile time and frames small
_DBL_MAX = sys.float_info.max

_CLASSIFIERS = frozenset({"binary", "multiclass", "multiclassova"})
_IDENTITY = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})
_EXP = frozenset({"poisson", "gamma", "tweedie"})
_SUPPORTED = _CLASSIFIERS | _IDENTITY | _EXP | {"cross_entropy", "cross_entropy_lambda"}


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:  # C's exp returns inf
        return math.inf


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + _exp(-v))


def _le(var: str, t: float) -> str:
    """`var <= t` for finite `var`; +-inf thresholds become constant tests."""
    if t == math.inf:
        return "True"
    if t == -math.inf:
        return "False"
    return f"{var} <= {float(t)!r}"


def _numerical_test(feature: int, t: float, missing_type: int, default_left: bool) -> str:
    """Python test equal to LightGBM's decision for every finite x, where LightGBM sees
    fval = 0.0 if |x| <= K_ZERO else x (tiny values are dropped from the row):
        Zero-missing node and fval == 0  ->  default side
        otherwise                        ->  fval <= t
    Worked out per range of t so the common case stays a single `x <= t`."""
    x = f"x[{int(feature)}]"
    kz = repr(K_ZERO)
    tiny = f"-{kz} <= {x} <= {kz}"
    small = -K_ZERO <= t < K_ZERO  # the zeroing decides within this band
    if missing_type != MISSING_ZERO:
        if not small:
            return _le(x, t)
        return f"{x} <= {kz}" if t >= 0 else f"{x} < -{kz}"
    if default_left:  # zero -> left, else fval <= t
        if t >= K_ZERO:
            return _le(x, t)
        return f"({_le(x, t)} or {tiny})" if t < -K_ZERO else f"{x} <= {kz}"
    # zero -> right, else fval <= t
    if t < -K_ZERO:
        return _le(x, t)
    if small:
        return f"{x} < -{kz}"
    upper = "" if t == math.inf else f" <= {float(t)!r}"
    return f"({x} < -{kz} or {kz} < {x}{upper})"


def _flat(tree: Tree) -> FlatTree:
    """LightGBM's children (>= 0 internal, < 0 = ~leaf) as one node array: internal
    nodes keep their index, leaf j becomes node num_internal + j (left == -1)."""
    n_int = tree.num_internal

    def node(child: int) -> int:
        return child if child >= 0 else n_int + ~child

    left = [node(c) for c in tree.left_child] + [-1] * tree.num_leaves
    right = [node(c) for c in tree.right_child] + [-1] * tree.num_leaves
    return FlatTree(left, right, list(tree.split_feature) + [0] * tree.num_leaves,
                    list(tree.threshold) + [0.0] * tree.num_leaves)


def _tree_lines(tree: Tree, var: str) -> list[str]:
    n_int = tree.num_internal

    def leaf(node: int) -> str:
        return f"{var} += {float(tree.leaf_value[node - n_int])!r}"

    def test(node: int) -> str:
        return _numerical_test(tree.split_feature[node], tree.threshold[node],
                               tree.missing_type(node), tree.default_left(node))

    lines, _ = tree_block(_flat(tree), "<=", leaf, condition=test)
    return lines


def _mean_leaf_depth(tree: Tree) -> float:
    """Internal nodes on the way to a leaf, averaged over the leaves."""
    if tree.num_leaves == 1:
        return 0.0
    total, stack = 0, [(0, 1)]
    while stack:
        node, d = stack.pop()
        for child in (tree.left_child[node], tree.right_child[node]):
            if child >= 0:
                stack.append((child, d + 1))
            else:
                total += d
    return total / tree.num_leaves


def _max_rows(trees: Sequence[Tree]) -> int:
    """Batch size up to which this beats Booster.predict(num_threads=1).

    Measured (bench/lightgbm_fast_path.py and variants, binary, 20 features, one core):
    LightGBM costs ~70 us per call (45-110 us with machine noise) plus ~0.007 us per
    visited node; this code ~1 us per row plus ~0.04 us per visited node. With D = sum
    of the trees' mean leaf depths, crossovers were 48 rows (3 trees of 7 leaves, D=9),
    32 (10x7, D=31), 24 (10x31, D=57), 16 (30x15, D=137), 8 (100x7, D=326), 4 (100x31,
    D=659; 35 vs 79 us at 1 row, 225 vs 101 us at 8) and 3 (300x7, D=1005):
    70 / (1 + 0.03 * D) matches all of them within one step."""
    d = sum(_mean_leaf_depth(t) for t in trees)
    return max(1, min(256, int(70.0 / (1.0 + 0.03 * d))))


def _check(model: LightGBMModel, trees: Sequence[Tree]) -> str:
    """The objective's name, or NotCompilable for what this fast path does not do."""
    obj = model.objective
    if obj is None or obj.name == "custom":
        raise NotCompilable("no objective in the model (custom objective): raw scores only")
    if obj.name not in _SUPPORTED:
        raise NotCompilable(f"objective {obj.name!r} is not supported")
    if not trees:
        raise NotCompilable("no trees to evaluate")
    if sum(2 * t.num_leaves - 1 for t in trees) > MAX_TOTAL_NODES:
        raise NotCompilable(f"more than {MAX_TOTAL_NODES} nodes")
    for t in trees:
        if t.num_cat:
            raise NotCompilable(f"categorical splits are not supported (Tree={t.index})")
        if t.is_linear:
            raise NotCompilable(f"linear trees are not supported (Tree={t.index})")
    return obj.name


class LightGBMTreeEvaluator(Evaluator):
    def __init__(self, model: LightGBMModel, num_iteration: int | None = None) -> None:
        k = model.num_tree_per_iteration
        total = model.num_iterations
        # LightGBM's InitPredict: num_iteration <= 0 (or None) means all of them
        self.n_iterations = total if not num_iteration or num_iteration <= 0 else min(
            num_iteration, total)
        trees = model.trees[: self.n_iterations * k]
        self.objective = _check(model, trees)
        assert model.objective is not None
        self.sigmoid = model.objective.sigmoid or 1.0
        self.sqrt = model.objective.sqrt
        self.n_outputs = k
        self.n_features = model.n_features
        self.average = model.average_output
        self.is_classifier = self.objective in _CLASSIFIERS
        self.name = f"python-codegen:lightgbm[{len(trees)} trees, {self.objective}]"
        self._run = self._compile(trees)
        self._set_sampling_range(trees)
        self.max_rows = _max_rows(trees)

    def _compile(self, trees: Sequence[Tree]) -> Callable[[list[float]], Any]:
        """One `run(x)` returning the raw sum (or a tuple of K sums), calling a chain of
        chunk functions that pass the running sums on (so the additions keep tree order)."""
        k = self.n_outputs
        sums = ", ".join(f"s{j}" for j in range(k))
        ret = f" return {sums}" if k == 1 else f" return ({sums},)"
        sources: list[str] = []
        names: list[str] = []
        body: list[str] = []
        for i, tree in enumerate(trees):
            body += _tree_lines(tree, f"s{i % k}")
            if len(body) > _CHUNK_LINES or i == len(trees) - 1:
                name = f"c{len(names)}"
                sources.append("\n".join([f"def {name}(x, {sums}):", *body, ret]))
                names.append(name)
                body = []
        zeros = ", ".join("0.0" for _ in range(k))
        # s0, s1, ... = c0(x, 0.0, ...); s0, ... = c1(x, s0, ...); ...
        driver = ["def run(x):", f" {sums} = {zeros}"]
        driver += [f" {sums} = {name}(x, {sums})" for name in names]
        driver.append(ret)
        sources.append("\n".join(driver))
        run: Callable[[list[float]], Any] = compile_functions(
            sources, [*names, "run"], self.name)[-1]
        return run

    def _set_sampling_range(self, trees: Sequence[Tree]) -> None:
        """feature_center / feature_scale around the thresholds, for `verify`'s rows."""
        lo = np.full(self.n_features, np.inf)
        hi = np.full(self.n_features, -np.inf)
        for t in trees:
            for f, thr in zip(t.split_feature, t.threshold, strict=True):
                if math.isfinite(thr):
                    lo[f] = min(lo[f], thr)
                    hi[f] = max(hi[f], thr)
        unused = ~np.isfinite(lo)
        lo[unused], hi[unused] = -1.0, 1.0
        # halves first: thresholds may be near +-DBL_MAX
        self.feature_center = lo / 2 + hi / 2
        self.feature_scale = np.maximum(hi / 2 - lo / 2, 1e-3)

    def as_rows(self, X: np.ndarray) -> list[list[float]] | None:
        """Rows as Python floats exactly as LightGBM reads them: float32/float64 kept (no
        float32 rounding of doubles), other dtypes cast to float32 as lightgbm's
        `_np2d_to_np1d` does; None if a value is not finite."""
        X = np.asarray(X)
        if X.dtype != np.float64 and X.dtype != np.float32:
            X = X.astype(np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected (rows, {self.n_features}) input, got {X.shape}")
        rows: list[list[float]] = X.tolist()
        if len(rows) == 1:  # numpy's reduction costs more than a C-level map on one row
            return rows if all(map(math.isfinite, rows[0])) else None
        return rows if np.isfinite(X).all() else None

    def raw_scores(self, rows: list[list[float]]) -> list[list[float]]:
        """Per row, the K raw sums (averaged for boosting=rf), before the link."""
        run = self._run
        out: list[list[float]] = ([[run(x)] for x in rows] if self.n_outputs == 1
                                  else [list(run(x)) for x in rows])
        if self.average:
            n = float(self.n_iterations)
            out = [[v / n for v in r] for r in out]
        return out

    def predict_rows(self, rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray | None]:
        raw = self.raw_scores(rows)
        obj = self.objective
        if obj == "multiclass":
            proba = np.array([_softmax(r) for r in raw], dtype=np.float64)
            return proba.argmax(axis=1), proba
        if obj == "multiclassova":
            sig = self.sigmoid
            proba = np.array([[_sigmoid(sig * v) for v in r] for r in raw], dtype=np.float64)
            return proba.argmax(axis=1), proba
        if obj == "binary":
            sig = self.sigmoid
            p = [_sigmoid(sig * r[0]) for r in raw]
            proba = np.array([[1.0 - v, v] for v in p], dtype=np.float64)
            return proba.argmax(axis=1), proba
        return np.array([self._link(r[0]) for r in raw], dtype=np.float64), None

    def _link(self, v: float) -> float:
        """ConvertOutput of the single-output objectives (regression_objective.hpp etc.)."""
        obj = self.objective
        if obj in _EXP:
            return _exp(v)
        if obj == "cross_entropy":
            return _sigmoid(v)
        if obj == "cross_entropy_lambda":
            return math.log1p(_exp(v))
        if self.sqrt:  # Common::Sign(x) * x * x
            return (1 if v > 0 else -1 if v < 0 else 0) * v * v
        return v


def _softmax(r: list[float]) -> list[float]:
    """Common::Softmax: exp(v - max), summed in order, then divided."""
    wmax = max(r)
    e = [_exp(v - wmax) for v in r]
    total = 0.0
    for v in e:
        total += v
    return [v / total for v in e]


def compile_lightgbm(model: LightGBMModel, *, num_iteration: int | None = None) -> Evaluator:
    """A compiled evaluator answering like `Booster.predict(X, num_iteration=...)` (labels
    and probabilities for binary/multiclass/multiclassova, values otherwise); raises
    NotCompilable (with the reason) for categorical splits, linear trees, ranking or
    custom objectives and models beyond the code generator's size limits."""
    return LightGBMTreeEvaluator(model, num_iteration)
