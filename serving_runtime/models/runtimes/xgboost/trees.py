"""XGBoost gbtree models as generated Python code.

Semantics of XGBoost's CPU predictor: the input is cast to float32, a node goes to its
left child when `x[f] < split_condition` (both float32), and each output's margin starts
at the model's base margin and adds the trees' leaf values one by one in float32. We
reproduce that accumulation with numpy float32 (`np.add.accumulate` is sequential), then
apply the objective's link in float32 as XGBoost does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from serving_runtime.models.trees.codegen import (
    MAX_TOTAL_NODES,
    FlatTree,
    NotCompilable,
    compile_functions,
    tree_block,
)
from serving_runtime.models.trees.evaluator import Evaluator

_CHUNK_LINES = 4000  # generated lines per function: keeps compile time and frames small
_SIGMOID = {"binary:logistic", "reg:logistic"}
_IDENTITY = {"reg:squarederror", "reg:squaredlogerror", "reg:pseudohubererror",
             "reg:absoluteerror", "reg:linear"}
_EXP = {"count:poisson", "reg:gamma", "reg:tweedie"}
_MULTI = {"multi:softprob", "multi:softmax"}


def _booster(model: Any) -> Any:
    import xgboost as xgb

    if isinstance(model, xgb.XGBModel):
        return model.get_booster()
    if isinstance(model, xgb.Booster):
        return model
    raise NotCompilable(f"{type(model).__name__} is not an XGBoost model")


class XGBoostTreeEvaluator(Evaluator):
    def __init__(self, model: Any, iteration_range: tuple[int, int] = (0, 0)) -> None:
        booster = _booster(model)
        raw = json.loads(booster.save_raw("json"))
        learner = raw["learner"]
        gb = learner["gradient_booster"]
        if gb["name"] != "gbtree":
            raise NotCompilable(f"booster {gb['name']!r} is not supported (gbtree only)")
        self.objective = learner["objective"]["name"]
        if self.objective not in _SIGMOID | _IDENTITY | _EXP | _MULTI:
            raise NotCompilable(f"objective {self.objective!r} is not supported")
        lmp = learner["learner_model_param"]
        if int(lmp.get("num_target", "1") or 1) != 1:
            raise NotCompilable("multi-target models are not supported")
        model_json = gb["model"]
        trees = model_json["trees"]
        indptr = [int(v) for v in model_json.get("iteration_indptr") or []]
        begin, end = iteration_range
        if (begin, end) != (0, 0):
            if begin != 0 or not indptr or end >= len(indptr):
                raise NotCompilable(f"iteration range {iteration_range} not supported")
            trees = trees[: indptr[end]]
        tree_info = [int(v) for v in model_json["tree_info"]][: len(trees)]
        if sum(len(t["left_children"]) for t in trees) > MAX_TOTAL_NODES:
            raise NotCompilable(f"more than {MAX_TOTAL_NODES} nodes")
        self.n_features = int(booster.num_features())
        num_class = int(lmp.get("num_class", "0") or 0)
        self.n_outputs = num_class if self.objective in _MULTI else 1
        self.is_classifier = self.objective in _MULTI or self.objective == "binary:logistic"
        self.has_proba = self.is_classifier and self.objective != "multi:softmax"
        self.name = f"python-codegen:xgboost[{len(trees)} trees, {self.objective}]"

        # Trees are inlined into a few "chunk" functions returning their leaf values as a
        # tuple: one Python call per chunk instead of one per tree.
        sources: list[str] = []
        names: list[str] = []
        body: list[str] = []
        chunk_vars: list[str] = []
        lo = np.full(self.n_features, np.inf)
        hi = np.full(self.n_features, -np.inf)
        for i, t in enumerate(trees):
            if any(int(s) != 0 for s in t["split_type"]):
                raise NotCompilable("categorical splits are not supported")
            if int(t["tree_param"].get("size_leaf_vector", "1") or 1) > 1:
                raise NotCompilable("vector leaves are not supported")
            left = [int(v) for v in t["left_children"]]
            cond = np.asarray(t["split_conditions"], dtype=np.float32)
            feat = [int(v) for v in t["split_indices"]]
            # float32 values held in Python floats compare exactly like XGBoost's floats
            thr = [float(v) for v in cond]
            for node, lc in enumerate(left):
                if lc != -1:
                    f = feat[node]
                    lo[f] = min(lo[f], thr[node])
                    hi[f] = max(hi[f], thr[node])
            flat = FlatTree(left, [int(v) for v in t["right_children"]], feat, thr)
            lines, _ = tree_block(flat, "<", _assign(f"v{i}", thr))
            body += lines
            chunk_vars.append(f"v{i}")
            if len(body) > _CHUNK_LINES or i == len(trees) - 1:
                name = f"c{len(names)}"
                sources.append("\n".join([f"def {name}(x):", *body,
                                          f" return ({', '.join(chunk_vars)},)"]))
                names.append(name)
                body, chunk_vars = [], []
        self._chunks = tuple(compile_functions(sources, names, self.name))
        unused = ~np.isfinite(lo)
        lo[unused], hi[unused] = -1.0, 1.0
        self.feature_center = (lo + hi) / 2
        self.feature_scale = np.maximum((hi - lo) / 2, 1e-3)
        # column indices of each output's trees, in model order
        self._groups = [np.flatnonzero(np.asarray(tree_info) == k) for k in range(self.n_outputs)]
        self._base = self._base_margin(booster, iteration_range)
        # Measured (XGB-100): ~0.08 us per tree-row here against ~80 us per XGBoost call
        # (runtimes/xgboost/direct.py) plus ~0.8 us per row, so XGBoost's own call wins
        # beyond ~1000 tree-rows (10 rows of XGB-100: 70 vs 93 us at 8 rows, 111 vs 94 at 13).
        self.max_rows = max(1, min(256, 1000 // max(1, len(trees))))

    def _leaf_matrix(self, rows: list[list[float]]) -> np.ndarray:
        chunks = self._chunks
        if len(chunks) == 1:
            c = chunks[0]
            return np.array([c(x) for x in rows], dtype=np.float32)
        return np.array([[v for c in chunks for v in c(x)] for x in rows], dtype=np.float32)

    def _base_margin(self, booster: Any, iteration_range: tuple[int, int]) -> np.ndarray:
        """Base margin per output, as float32. The saved base_score's format differs
        between XGBoost versions, so ask XGBoost itself: its margins on probe rows minus
        our leaf sums give an estimate; then pick, among the nearby float32 values, the
        one that reproduces its float32 margins on the most probe rows."""
        rng = np.random.default_rng(0)
        probe = (rng.uniform(-1.5, 1.5, (512, self.n_features)) * self.feature_scale
                 + self.feature_center).astype(np.float32)
        ref = np.asarray(booster.inplace_predict(
            probe, iteration_range=iteration_range, predict_type="margin",
            validate_features=False), dtype=np.float32).reshape(len(probe), self.n_outputs)
        leaves = self._leaf_matrix(probe.tolist())
        base = np.zeros(self.n_outputs, dtype=np.float32)
        for k, cols in enumerate(self._groups):
            est = np.median(ref[:, k].astype(np.float64)
                            - leaves[:, cols].astype(np.float64).sum(axis=1))
            cands = [np.float32(est)]
            up = down = cands[0]
            for _ in range(8):
                up = np.nextafter(up, np.float32(np.inf))
                down = np.nextafter(down, np.float32(-np.inf))
                cands += [up, down]
            scores = []
            for c in cands:
                got = self._accumulate(leaves[:, cols], c)
                scores.append((int((got != ref[:, k]).sum()),
                               float(np.abs(got - ref[:, k]).max())))
            base[k] = cands[min(range(len(cands)), key=scores.__getitem__)]
        return base

    @staticmethod
    def _accumulate(leaves: np.ndarray, base: np.float32) -> np.ndarray:
        full = np.empty((leaves.shape[0], leaves.shape[1] + 1), dtype=np.float32)
        full[:, 0] = base
        full[:, 1:] = leaves
        return np.add.accumulate(full, axis=1)[:, -1]

    def margins(self, rows: list[list[float]]) -> np.ndarray:
        if self.n_outputs == 1 and len(self._chunks) == 1:
            # one output, one chunk (XGB-100 and the like): build [base, leaf...] rows in
            # one numpy call and accumulate in float32 (numpy calls dominate one row)
            c, base = self._chunks[0], (float(self._base[0]),)
            full = np.array([base + c(x) for x in rows], dtype=np.float32)
            return np.add.accumulate(full, axis=1)[:, -1:]
        leaves = self._leaf_matrix(rows)
        out = np.empty((len(rows), self.n_outputs), dtype=np.float32)
        for k, cols in enumerate(self._groups):
            out[:, k] = self._accumulate(leaves[:, cols], self._base[k])
        return out

    def predict_rows(self, rows: list[list[float]]) -> tuple[np.ndarray, np.ndarray | None]:
        m = self.margins(rows)
        one = np.float32(1.0)
        obj = self.objective
        if obj in _MULTI:
            if obj == "multi:softmax":
                return m.argmax(axis=1).astype(np.int64), None
            e = np.exp(m - m.max(axis=1, keepdims=True))
            proba = e / e.sum(axis=1, keepdims=True)
            return proba.argmax(axis=1), proba.astype(np.float64)
        v = m[:, 0]
        if obj in _SIGMOID:
            v = one / (one + np.exp(-v))
        elif obj in _EXP:
            v = np.exp(v)
        if obj == "binary:logistic":
            proba = np.empty((len(v), 2), dtype=np.float64)
            proba[:, 0] = one - v  # computed in float32 like XGBoost, then widened
            proba[:, 1] = v
            return proba.argmax(axis=1), proba
        return v, None


def _assign(var: str, values: list[float]) -> Callable[[int], str]:
    """Leaf statement: `var = <the leaf's value>`."""
    def leaf(node: int) -> str:
        return f"{var} = {values[node]!r}"
    return leaf


def compile_xgboost(model: Any, iteration_range: tuple[int, int] = (0, 0)) -> XGBoostTreeEvaluator:
    return XGBoostTreeEvaluator(model, iteration_range)
