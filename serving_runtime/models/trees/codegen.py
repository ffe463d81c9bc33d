"""Turn binary decision trees into plain Python functions (nested `if`/`else`).

For one row, a compiled `if` chain costs ~20-30 ns per visited node, far below the
fixed per-call overhead of scikit-learn (~750 us), XGBoost (~125-400 us) or even ONNX
Runtime (~7 us): see README.md in this folder for the measurements.

Only numbers ever reach the generated source (ints via `int()`, floats via `repr` of a
finite `float`, which round-trips exactly), so a model file cannot inject code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Python's parser recurses per nesting level; very deep trees would hit its limit, and
# very large ensembles would take long to compile. Beyond these, use the reference path.
MAX_DEPTH = 80
MAX_TOTAL_NODES = 300_000


class NotCompilable(Exception):
    """The model is outside what the code generator supports (caller falls back)."""


@dataclass(frozen=True)
class FlatTree:
    """One binary tree as parallel per-node arrays (as sklearn and XGBoost store them).

    `left[i] == -1` marks a leaf; `leaf(i)` gives its return value as Python source.
    Internal nodes go left when `x[feature[i]] <op> threshold[i]` holds."""

    left: Sequence[int]
    right: Sequence[int]
    feature: Sequence[int]
    threshold: Sequence[float]


def _num(value: float) -> str:
    v = float(value)
    if not math.isfinite(v):
        raise NotCompilable(f"non-finite constant {v!r} in a tree")
    return repr(v)


def tree_block(
    tree: FlatTree, op: str, leaf_stmt: Callable[[int], str], indent: int = 1,
    condition: Callable[[int], str] | None = None,
) -> tuple[list[str], int]:
    """Source lines of one tree as nested `if`/`else` starting at `indent`; each leaf
    becomes `leaf_stmt(node)` (e.g. `return 0.5` or `a += 0.5`). Returns (lines, depth).
    `condition(node)`, when given, is the node's whole test instead of
    `x[feature] <op> threshold` (LightGBM's missing-value rules); it must be built from
    numbers only, like everything else here."""
    if op not in ("<=", "<"):
        raise ValueError(op)
    lines: list[str] = []
    max_depth = 0
    # Iterative pre-order walk: the trees may be deeper than Python's recursion limit.
    stack: list[tuple[int, int, str | None]] = [(0, indent, None)]
    while stack:
        node, depth, prefix = stack.pop()
        if prefix is not None:
            lines.append(prefix)
        if depth - indent >= MAX_DEPTH:
            raise NotCompilable(f"tree deeper than {MAX_DEPTH}")
        max_depth = max(max_depth, depth - indent + 1)
        pad = " " * depth
        left = int(tree.left[node])
        if left == -1:
            lines.append(f"{pad}{leaf_stmt(node)}")
            continue
        test = (condition(node) if condition is not None
                else f"x[{int(tree.feature[node])}] {op} {_num(tree.threshold[node])}")
        lines.append(f"{pad}if {test}:")
        # pushed in reverse: left subtree first, then "else:" + right subtree
        stack.append((int(tree.right[node]), depth + 1, f"{pad}else:"))
        stack.append((left, depth + 1, None))
    return lines, max_depth


def tree_source(
    name: str, tree: FlatTree, op: str, leaf_source: Callable[[int], str]
) -> tuple[str, int]:
    """Source of `def name(x): ...` returning `leaf_source(node)`; returns (source, depth)."""
    lines, depth = tree_block(tree, op, lambda n: f"return {leaf_source(n)}")
    return "\n".join([f"def {name}(x):", *lines]), depth


def compile_functions(sources: Sequence[str], names: Sequence[str], label: str) -> list[Any]:
    """Compile generated `def`s in one fresh namespace and return them in order."""
    namespace: dict[str, Any] = {"__builtins__": {}}
    try:
        code = compile("\n\n".join(sources), f"<fastpath:{label}>", "exec")
        exec(code, namespace)  # noqa: S102 - numbers-only source generated above
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise NotCompilable(f"generated code did not compile: {exc}") from exc
    return [namespace[n] for n in names]
