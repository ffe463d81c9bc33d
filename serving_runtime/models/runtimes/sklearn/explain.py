"""Exact TreeSHAP for scikit-learn's trees (serving_runtime.models.trees.shap): decision
trees, random and extra-trees forests, gradient boosting. Splits as scikit-learn takes
them: the row cast to float32, left when `x[f] <= threshold`; cover is the node's
weighted training samples, as shap.TreeExplainer uses."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving_runtime.models.runtimes.base import Explanation, NotExplainable
from serving_runtime.models.trees.shap import ShapForest, ShapTree

_FORESTS = {"RandomForestClassifier", "ExtraTreesClassifier", "RandomForestRegressor",
            "ExtraTreesRegressor"}
_TREES = {"DecisionTreeClassifier", "ExtraTreeClassifier", "DecisionTreeRegressor",
          "ExtraTreeRegressor"}
_BOOSTED = {"GradientBoostingClassifier", "GradientBoostingRegressor"}


# Rows whose split outcomes (one boolean per node of every tree) are evaluated at once:
# bounds a large batch on a large forest to ~32 MB of outcome matrix.
_OUTCOME_ELEMENTS = 16_000_000


def _shap_tree(tree: Any, values: np.ndarray) -> ShapTree:
    t = tree.tree_
    return ShapTree(t.children_left, t.children_right, t.feature,
                    t.weighted_n_node_samples.astype(np.float64), values.astype(np.float64))


class SklearnExplainer:
    """Built once per model (the trees' path structure), then `explain(X)` per request."""

    def __init__(self, estimator: Any) -> None:
        kind = type(estimator).__name__
        self.estimator = estimator
        if kind in _FORESTS or kind in _TREES:
            if getattr(estimator, "n_outputs_", 1) != 1:
                raise NotExplainable(f"{kind} with several outputs has no explainer here")
            members = list(estimator.estimators_) if kind in _FORESTS else [estimator]
            proba = hasattr(estimator, "classes_")
            self.output = "probability" if proba else "value"
            trees = []
            for m in members:  # a forest averages its trees
                v = m.tree_.value[:, 0, :]
                if proba:  # a classifier's leaf: its class distribution (predict_proba's)
                    v = v / v.sum(axis=1, keepdims=True)
                trees.append(_shap_tree(m, v / len(members)))
            n_out = trees[0].values.shape[1]
            self.classes = tuple(range(n_out)) if proba else None
            offset = np.zeros(n_out)
        elif kind in _BOOSTED:
            lr = float(estimator.learning_rate)
            stages = estimator.estimators_  # (n_stages, 1 or n_classes) regression trees
            k = stages.shape[1]
            self.output = "margin"
            trees = []
            for i, m in enumerate(stages.ravel()):  # stage tree i adds to output i % k
                v = np.zeros((m.tree_.node_count, k))
                v[:, i % k] = m.tree_.value[:, 0, 0] * lr
                trees.append(_shap_tree(m, v))
            self.classes = None if kind.endswith("Regressor") else (
                (1,) if k == 1 else tuple(range(k)))
            offset = self._offset(trees, k)
        elif kind.startswith("HistGradientBoosting"):
            raise NotExplainable(f"{kind} has no explainer here yet (its binned trees are "
                                 f"not scikit-learn tree_ objects)")
        else:
            raise NotExplainable(f"{kind} is not a tree model: explanations are exact "
                                 f"TreeSHAP of decision trees, forests and gradient boosting")
        members = [m.tree_ for m in (estimator.estimators_.ravel() if kind in _BOOSTED
                                     else members)]
        # every node of every tree, in ShapForest's order: one comparison evaluates them all
        self.split_feature = np.concatenate([np.maximum(t.feature, 0) for t in members])
        self.split_threshold = np.concatenate([t.threshold for t in members])
        self.forest = ShapForest(trees)
        self.base = offset + self.forest.expected_value

    def _offset(self, trees: list[ShapTree], k: int) -> np.ndarray:
        """A boosted model's starting raw score (its init estimator's): the raw output of
        one row minus what its trees add."""
        est = self.estimator
        x = np.zeros((1, est.n_features_in_))
        raw = est.decision_function(x) if self.classes is not None else est.predict(x)
        raw = np.asarray(raw, dtype=np.float64).reshape(k)
        x32 = x.astype(np.float32)
        added = np.zeros(k)
        for m, st in zip(est.estimators_.ravel(), trees, strict=True):
            leaf = m.tree_.apply(x32)[0]
            added += st.values[leaf]
        return np.asarray(raw - added)

    def explain(self, X: np.ndarray) -> Explanation:
        # scikit-learn's splits: the row cast to float32, left when x[f] <= threshold
        X32 = X.astype(np.float32)
        rows, n = X.shape
        phi = np.empty((rows, n, self.forest.n_outputs))
        step = max(1, _OUTCOME_ELEMENTS // self.forest.n_nodes)
        for r0 in range(0, rows, step):
            block = X32[r0:r0 + step]
            goes_left = block[:, self.split_feature] <= self.split_threshold
            phi[r0:r0 + step] = self.forest.contributions(goes_left, n)
        return Explanation(phi, self.base.copy(), self.output,  # type: ignore[arg-type]
                           self.classes)


__all__ = ["SklearnExplainer"]
