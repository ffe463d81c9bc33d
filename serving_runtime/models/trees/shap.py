"""Exact TreeSHAP (Lundberg et al., "Consistent individualized feature attribution for tree
ensembles", 2018; path-dependent, as shap.TreeExplainer's default), for the trees whose
framework has no built-in one (scikit-learn).

TreeSHAP's recursion keeps, along the path to each leaf, one element per distinct feature
split on: its zero fraction (the share of training cover that follows the path at that
feature's splits) and its one fraction (whether the row follows them: 0 or 1). A leaf's
share of each feature's contribution is a function of those elements only, whatever their
order. So each leaf is computed from its own path, and every leaf with the same number of
distinct features, in every tree of the ensemble and for every row of a batch, goes through
one set of numpy operations: O(depth) array operations per path length, not per tree or
per row (numpy's per-call overhead, not arithmetic, is what one row costs). The path
structure is built once per model (`ShapForest`); a request only evaluates the splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Elements of the (rows, leaves, path) arrays one step works on: bounds the memory of a
# large batch on a deep forest (~16 MB per array, a handful alive at once).
_STEP_ELEMENTS = 1048576


@dataclass(frozen=True, slots=True)
class ShapTree:
    """One tree: children by node (-1 at a leaf), split feature, cover (the training
    weight that reached each node) and leaf values, shape (n_nodes, n_outputs), already
    scaled by the tree's weight in the ensemble."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    cover: np.ndarray
    values: np.ndarray

    def expected_value(self) -> np.ndarray:
        """The tree's mean output over its training cover: its share of the base value."""
        leaves = self.left < 0
        return (self.values[leaves] * self.cover[leaves, None]).sum(axis=0) / self.cover[0]


@dataclass(frozen=True, slots=True)
class _PathGroup:
    """Leaves (of any tree) whose paths have `m` distinct features."""

    feature: np.ndarray  # (m, leaves): the distinct features, first use first
    zero: np.ndarray  # (m, leaves): their zero fractions
    conditions: np.ndarray  # (m, leaves, splits): rows of the split-outcome matrix
    values: np.ndarray  # (leaves, outputs)


class ShapForest:
    """The trees of one ensemble, their nodes numbered one after another (tree 0's first):
    `contributions` takes the split outcomes of all of them at once."""

    def __init__(self, trees: Sequence[ShapTree]) -> None:
        self.n_nodes = sum(len(t.left) for t in trees)
        self.n_outputs = trees[0].values.shape[1]
        self.expected_value = np.sum([t.expected_value() for t in trees], axis=0)
        self._groups = _path_groups(trees, self.n_nodes)

    def contributions(self, goes_left: np.ndarray, n_features: int) -> np.ndarray:
        """Shape (n_rows, n_features, n_outputs): per row they sum to the ensemble's output
        minus `expected_value`. `goes_left`: (n_rows, n_nodes) booleans, True where the row
        goes to that node's left child (leaves' columns unused)."""
        rows = goes_left.shape[0]
        # outcome[c, row]: node c // 2's left (c even) or right child taken; rows last, so
        # every array below is (path element, leaf, row) and each slice is contiguous
        outcome = np.empty((2 * self.n_nodes + 1, rows), dtype=bool)
        outcome[0:-1:2] = goes_left.T
        outcome[1:-1:2] = ~goes_left.T
        outcome[-1] = True  # the column padding points at
        phi = np.zeros((self.n_outputs, rows * n_features))
        for g in self._groups:
            m, leaves = g.feature.shape
            step = max(1, _STEP_ELEMENTS // (leaves * (m + 1)))
            outputs = [j for j in range(self.n_outputs) if g.values[:, j].any()]
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                one = outcome[:, r0:r1][g.conditions].all(axis=2)  # (m, leaves, rows)
                scale = _path_scale(g.zero, one)
                # scatter-add into this step's (row, feature) cells, one contiguous run of
                # phi: bincount is one C loop (np.add.at is slow)
                at = (np.arange(r1 - r0) * n_features + g.feature[:, :, None]).ravel()
                cells = slice(r0 * n_features, r1 * n_features)
                for j in outputs:
                    phi[j, cells] += np.bincount(at, (scale * g.values[:, j, None]).ravel(),
                                                 minlength=(r1 - r0) * n_features)
        return np.moveaxis(phi.reshape(self.n_outputs, rows, n_features), 0, -1)


def _path_groups(trees: Sequence[ShapTree], n_nodes: int) -> list[_PathGroup]:
    always = 2 * n_nodes  # the outcome-matrix column that is always true
    by_len: dict[int, list[tuple[list[int], list[float], list[list[int]], np.ndarray]]] = {}
    base = 0
    for tree in trees:
        # (node, [(feature, zero fraction, [outcome columns])] along the path)
        stack: list[tuple[int, list[tuple[int, float, list[int]]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if tree.left[node] < 0:
                if path:  # a single-leaf tree attributes nothing
                    by_len.setdefault(len(path), []).append(
                        ([f for f, _, _ in path], [z for _, z, _ in path],
                         [c for _, _, c in path], tree.values[node]))
                continue
            f = int(tree.feature[node])
            at = next((i for i, p in enumerate(path) if p[0] == f), None)
            for child, column in ((int(tree.left[node]), 2 * (base + node)),
                                  (int(tree.right[node]), 2 * (base + node) + 1)):
                # a node no training weight reached (zero-weight rows) passes none on
                ratio = (float(tree.cover[child] / tree.cover[node]) if tree.cover[node] > 0
                         else 0.0)
                if at is None:
                    stack.append((child, [*path, (f, ratio, [column])]))
                else:  # the same feature again: one element, its fractions multiplied
                    _, z, cols = path[at]
                    stack.append((child, [*path[:at], (f, z * ratio, [*cols, column]),
                                          *path[at + 1:]]))
        base += len(tree.left)
    groups = []
    for m, leaves in sorted(by_len.items()):
        splits = max(len(c) for _, _, conds, _ in leaves for c in conds)
        cond = np.full((m, len(leaves), splits), always, dtype=np.intp)
        for i, (_, _, conds, _) in enumerate(leaves):
            for j, c in enumerate(conds):
                cond[j, i, :len(c)] = c
        groups.append(_PathGroup(
            feature=np.array([f for f, _, _, _ in leaves], dtype=np.intp).T.copy(),
            zero=np.array([z for _, z, _, _ in leaves], dtype=np.float64).T.copy(),
            conditions=cond,
            values=np.array([v for _, _, _, v in leaves], dtype=np.float64)))
    return groups


def _path_scale(zero: np.ndarray, one: np.ndarray) -> np.ndarray:
    """Per path element: its unwound path-weight sum times (one - zero), what it adds to
    its feature per unit of leaf value. zero: (m, leaves); one: (m, leaves, rows), 0 or 1
    (a row follows all of an element's splits or not)."""
    m = one.shape[0]
    z = zero[:, :, None]
    # EXTEND every element in turn (the root placeholder first, weight 1). Step `depth`
    # sets w[j] = (z (depth - j) w[j] + o j w[j-1]) / (depth + 1) for j = 0..depth: the
    # reference's descending in-place loop, as array operations.
    w = np.zeros((m + 1, *one.shape[1:]))
    w[0] = 1.0
    for j in range(m):
        depth = j + 1
        k = np.arange(depth + 1, dtype=np.float64)[:, None, None]
        prev = w[:depth]
        stay = prev * (z[j] * ((depth - k[:-1]) / (depth + 1)))
        w[1:depth + 1] = prev * (k[1:] / (depth + 1)) * one[j]  # a new array: prev is read
        w[0] = 0.0
        w[:depth] += stay
    # UNWIND each element out again (all elements at once, along the first axis) and sum.
    # Where the row follows the element (one = 1) the reference's recursion runs; where it
    # does not, the sum is sum_i w[i] / (z (depth - i)), the same for every element but z.
    depth = m
    nxt = np.broadcast_to(w[depth], one.shape)
    total_one = np.zeros(one.shape)
    zero_sum = np.zeros(one.shape[1:])
    for i in range(depth - 1, -1, -1):
        total_one += nxt * (1.0 / (i + 1))
        nxt = w[i] - nxt * (z * ((depth - i) / (i + 1)))
        zero_sum += w[i] / (depth - i)
    # z = 0 (a child no training weight reached) only matters where the row follows it
    off = np.divide(zero_sum, z, out=np.zeros(one.shape), where=z > 0)
    unwound = np.where(one, total_one, off)
    return unwound * ((depth + 1) * (one - z))


def tree_shap(tree: ShapTree, goes_left: np.ndarray, n_features: int) -> np.ndarray:
    """One tree's contributions, shape (n_rows, n_features, n_outputs)."""
    return ShapForest([tree]).contributions(goes_left, n_features)


__all__ = ["ShapForest", "ShapTree", "tree_shap"]
