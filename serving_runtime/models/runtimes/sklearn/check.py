"""Checks a scikit-learn artifact passes around skops.

- A skops file is a zip: its members' declared sizes (which Python's zipfile holds the
  decompressed data to) must add up to no more than the artifact limit, so a small file
  cannot unpack into gigabytes (a zip bomb) while skops reads it.
- skops trusts scikit-learn's tree types (`sklearn.tree._tree.Tree`, the hist-gradient-
  boosting `TreePredictor`), whose node arrays the native predict code follows unchecked:
  measured with scikit-learn 1.9, a child index out of range or a split feature beyond the
  input's width is a SIGSEGV and a child pointing back at the root an endless loop. So every
  tree of a loaded estimator is checked the same way as XGBoost's (xgboost/check.py).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

from serving_runtime.models.runtimes.native_errors import ModelFileError

_MAX_OBJECTS = 1_000_000  # objects visited while looking for trees


def skops_unpacked_size(data: bytes) -> int:
    """Total declared size of a skops zip's members. Raises zipfile.BadZipFile."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(info.file_size for info in archive.infolist())


def _check_nodes(where: str, left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray,
                 feature: np.ndarray, width: int | None) -> None:
    n = len(left)
    if n < 1:
        raise ModelFileError(f"{where} has no nodes")
    inner = ~is_leaf
    children = np.concatenate((left[inner], right[inner])).astype(np.int64)
    if children.size and (children.min() < 1 or children.max() >= n):
        raise ModelFileError(f"{where}: a child index is outside the tree's {n} nodes")
    if np.unique(children).size != children.size:
        raise ModelFileError(f"{where}: a node is the child of two nodes (or a cycle)")
    used = feature[inner].astype(np.int64)
    if used.size and (used.min() < 0 or (width is not None and used.max() >= width)):
        raise ModelFileError(f"{where}: a split uses feature {int(used.max())}, the model "
                             f"takes {width} features")


def _check_tree(where: str, tree: Any, width: int | None) -> None:
    n = int(tree.node_count)
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    if not len(left) == len(right) == len(feature) == n or np.asarray(tree.value).shape[0] != n:
        raise ModelFileError(f"{where}: node arrays disagree with node_count {n}")
    is_leaf = left == -1
    if not np.array_equal(is_leaf, right == -1):
        raise ModelFileError(f"{where}: a node has one child")
    tree_width = int(tree.n_features)
    _check_nodes(where, left, right, is_leaf, feature,
                 tree_width if width is None else min(width, tree_width))


def _check_predictor(where: str, predictor: Any, width: int | None) -> None:
    nodes = predictor.nodes
    is_leaf = np.asarray(nodes["is_leaf"]).astype(bool)
    _check_nodes(where, np.asarray(nodes["left"]), np.asarray(nodes["right"]), is_leaf,
                 np.asarray(nodes["feature_idx"]), width)
    categorical = ~is_leaf & np.asarray(nodes["is_categorical"]).astype(bool)
    if categorical.any():
        used = np.asarray(nodes["bitset_idx"])[categorical].astype(np.int64)
        for bitsets in (predictor.raw_left_cat_bitsets, predictor.binned_left_cat_bitsets):
            if used.min() < 0 or used.max() >= len(bitsets):
                raise ModelFileError(f"{where}: a categorical split's bitset is missing")


def check_sklearn_trees(estimator: Any) -> None:
    """Raise ModelFileError when a tree inside `estimator` (at any depth: pipelines,
    forests, boosting stages) would make scikit-learn's native predict read outside its
    arrays or loop. Trees are checked against the width of the estimator holding them;
    forests and gradient boosting pass their input unvalidated to their trees, so those
    must have the ensemble's width."""
    from sklearn.base import BaseEstimator
    from sklearn.ensemble._forest import BaseForest
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    seen: set[int] = set()
    stack: list[tuple[Any, int | None, str]] = [(estimator, None, type(estimator).__name__)]
    found = 0
    while stack:
        obj, width, path = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if len(seen) > _MAX_OBJECTS:
            raise ModelFileError(f"more than {_MAX_OBJECTS} objects inside the estimator")
        if isinstance(obj, Tree):
            found += 1
            _check_tree(f"tree {found} ({path})", obj, width)
            continue
        if isinstance(obj, TreePredictor):
            found += 1
            _check_predictor(f"tree {found} ({path})", obj, width)
            continue
        if isinstance(obj, dict):
            stack.extend((v, width, path) for v in obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend((v, width, f"{path}[{i}]") for i, v in enumerate(obj))
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:
                stack.extend((v, width, path) for v in obj.ravel())
        elif isinstance(obj, BaseEstimator):
            own = getattr(obj, "n_features_in_", None)
            own = int(own) if isinstance(own, int | np.integer) else width
            tree = getattr(obj, "tree_", None)
            if isinstance(tree, Tree) and own is not None and int(tree.n_features) != own:
                raise ModelFileError(f"{path}: its tree takes {tree.n_features} features, "
                                     f"the estimator {own}")
            if isinstance(obj, BaseForest | BaseGradientBoosting) and own is not None:
                subs = np.asarray(getattr(obj, "estimators_", []), dtype=object).ravel()
                for sub in subs:
                    sub_width = getattr(sub, "n_features_in_", own)
                    if sub_width != own:
                        raise ModelFileError(f"{path}: a member takes {sub_width} features, "
                                             f"the ensemble {own}")
            stack.extend((v, own, f"{path}.{k}") for k, v in vars(obj).items())
        elif type(obj).__module__.startswith("sklearn.") and hasattr(obj, "__dict__"):
            # helper objects holding estimators (e.g. calibration's per-class wrappers)
            stack.extend((v, width, f"{path}.{k}") for k, v in vars(obj).items())
