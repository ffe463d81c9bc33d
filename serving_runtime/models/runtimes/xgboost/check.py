"""Checks an XGBoost model file passes before XGBoost's own parser and predictor see it.

Measured with xgboost 3.2 (battery: tests/battery/test_battery_model_files.py): its UBJSON
reader trusts the lengths in the file, so a truncated `.ubj` kills the process with SIGSEGV,
aborts with std::bad_alloc or allocates without end (a 62-byte cut grew past 4 GB); its JSON
reader recurses without limit (100 000 nested `[` = SIGSEGV); and a well-formed file whose
trees point outside their node arrays (a child index, a split feature beyond `num_feature`,
a cycle) loads and then crashes or loops forever in predict. So before XGBoost reads a file:

- UBJSON is parsed here with every length and count bounded by the bytes left, nesting
  at most MAX_DEPTH, only the markers XGBoost writes, nothing after the root object;
- JSON is parsed here (orjson, nesting limit 1024; the standard library for the `NaN`
  literals XGBoost may write);
- the parsed document's trees are checked the way the native predictor relies on: node
  arrays as long as `num_nodes`, children inside the tree and each node reached once from
  the root (so no cycle), split features below `num_feature`, categorical segments inside
  `categories`, `tree_info`/`iteration_indptr` consistent with the tree list, and bounded
  `num_feature`/`num_class`/`num_target`.
Anything XGBoost checks by itself (objective names, parameter formats, missing keys) is
left to it; its error text is cleaned by `native_errors.clean_native_error`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson

from serving_runtime.models.runtimes.base import MAX_FEATURES
from serving_runtime.models.runtimes.native_errors import ModelFileError

MAX_DEPTH = 64  # real models nest 6 levels deep
MAX_OUTPUTS = 65_536  # classes / targets
MAX_CATEGORY = 1 << 24  # category values index a bitset XGBoost allocates
# UBJSON marker -> (struct format, numpy dtype, bytes); big-endian as the format says
_INTS = {ord("i"): (">b", ">i1", 1), ord("U"): (">B", ">u1", 1), ord("I"): (">h", ">i2", 2),
         ord("l"): (">i", ">i4", 4), ord("L"): (">q", ">i8", 8)}
_FLOATS = {ord("d"): (">f", ">f4", 4), ord("D"): (">d", ">f8", 8)}
_TYPED = {**_INTS, **_FLOATS}


# --- UBJSON --------------------------------------------------------------------------


class _Ubj:
    __slots__ = ("data", "pos", "size")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.size = len(data)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ModelFileError(
                f"truncated or corrupt: {what} at byte {self.pos} needs {n} bytes, "
                f"{self.size - self.pos} left")

    def byte(self, what: str) -> int:
        self.need(1, what)
        b = self.data[self.pos]
        self.pos += 1
        return b

    def number(self, marker: int, what: str) -> int | float:
        fmt, _, n = _TYPED[marker]
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return value

    def length(self, what: str) -> int:
        marker = self.byte(what)
        if marker not in _INTS:
            raise ModelFileError(f"corrupt: {what} at byte {self.pos - 1} has marker "
                                 f"{chr(marker)!r}, not an integer")
        n = int(self.number(marker, what))
        if n < 0:
            raise ModelFileError(f"corrupt: negative {what} ({n}) at byte {self.pos}")
        return n

    def text(self, what: str) -> str:
        n = self.length(f"{what} length")
        self.need(n, what)
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ModelFileError(f"nested deeper than {MAX_DEPTH} levels at byte {self.pos}")
        start = self.pos
        marker = self.byte("value marker")
        if marker == ord("{"):
            out: dict[str, Any] = {}
            while True:
                self.need(1, "object key or '}'")
                if self.data[self.pos] == ord("}"):
                    self.pos += 1
                    return out
                key = self.text("object key")
                out[key] = self.value(depth + 1)
        if marker == ord("["):
            return self.array(depth)
        if marker == ord("S"):
            return self.text("string")
        if marker in _TYPED:
            return self.number(marker, "number")
        if marker == ord("T"):
            return True
        if marker == ord("F"):
            return False
        if marker == ord("Z"):
            return None
        raise ModelFileError(f"corrupt: unknown marker {chr(marker)!r} at byte {start}")

    def array(self, depth: int) -> Any:
        self.need(1, "array header")
        nxt = self.data[self.pos]
        if nxt == ord("$"):  # typed: [$<type>#<count> then count raw values
            self.pos += 1
            kind = self.byte("array type")
            if kind not in _TYPED:
                raise ModelFileError(f"corrupt: typed array of {chr(kind)!r} at byte "
                                     f"{self.pos - 1}")
            if self.byte("array count marker") != ord("#"):
                raise ModelFileError(f"corrupt: typed array without a count at byte "
                                     f"{self.pos - 1}")
            count = self.length("array count")
            _, dtype, size = _TYPED[kind]
            self.need(count * size, f"array of {count} values")
            arr = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
            self.pos += count * size
            return arr
        if nxt == ord("#"):  # counted: every element carries its marker (>= 1 byte)
            self.pos += 1
            count = self.length("array count")
            self.need(count, f"array of {count} values")
            return [self.value(depth + 1) for _ in range(count)]
        items: list[Any] = []
        while True:
            self.need(1, "array value or ']'")
            if self.data[self.pos] == ord("]"):
                self.pos += 1
                return items
            items.append(self.value(depth + 1))


def parse_ubjson(data: bytes) -> dict[str, Any]:
    """The UBJSON document XGBoost wrote, read with every length checked; typed arrays
    come back as numpy views of `data`."""
    if not data:
        raise ModelFileError("empty file")
    if data[:1] != b"{":
        raise ModelFileError("not an XGBoost UBJSON model (does not start with '{')")
    reader = _Ubj(data)
    doc = reader.value(0)
    if reader.pos != reader.size:
        raise ModelFileError(f"corrupt: {reader.size - reader.pos} bytes after the model "
                             f"object (at byte {reader.pos})")
    return doc


def parse_json_model(data: bytes) -> dict[str, Any]:
    if not data.strip():
        raise ModelFileError("empty file")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as first:
        try:  # NaN / Infinity literals, which orjson refuses and XGBoost writes
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise ModelFileError(f"not valid JSON: {first}") from None
    if not isinstance(doc, dict):
        raise ModelFileError("not an XGBoost model (the JSON is not an object)")
    return doc


# --- what the native predictor relies on ---------------------------------------------


def _param(params: Any, key: str, lo: int, hi: int) -> int | None:
    """An integer model parameter (XGBoost stores them as strings), bounded; None when
    absent or unreadable (XGBoost then refuses the file itself)."""
    if not isinstance(params, dict) or key not in params:
        return None
    try:
        value = int(str(params[key]).strip())
    except ValueError:
        return None
    if not lo <= value <= hi:
        raise ModelFileError(f"{key} is {value}; accepted: {lo} to {hi}")
    return value


def _ints(tree: dict[str, Any], key: str, where: str) -> np.ndarray | None:
    if key not in tree:
        return None
    raw = tree[key]
    try:
        arr = raw if isinstance(raw, np.ndarray) else np.asarray(raw)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iub"):
            raise TypeError
        return arr.astype(np.int64, copy=False)
    except (TypeError, ValueError, OverflowError):
        raise ModelFileError(f"{where}: '{key}' is not a list of integers") from None


def _length(tree: dict[str, Any], key: str) -> int | None:
    raw = tree.get(key)
    if isinstance(raw, np.ndarray | list):
        return len(raw)
    return None


def _per_node(where: str, key: str, arr: np.ndarray | None, n: int) -> np.ndarray:
    """`arr` (a required per-node array), refused when missing or not `n` long."""
    if arr is None:
        raise ModelFileError(f"{where}: '{key}' is missing")
    if len(arr) != n:
        raise ModelFileError(f"{where}: '{key}' has {len(arr)} entries, num_nodes is {n}")
    return arr


def _check_tree(i: int, tree: Any, num_feature: int | None) -> int:
    """Checks tree `i`; returns its leaf-vector size."""
    where = f"tree {i}"
    if not isinstance(tree, dict):
        raise ModelFileError(f"{where} is not an object")
    tp = tree.get("tree_param")
    n = _param(tp, "num_nodes", 1, 1 << 31)
    if n is None:
        raise ModelFileError(f"{where}: tree_param.num_nodes is missing or not a number")
    slv = _param(tp, "size_leaf_vector", 0, MAX_OUTPUTS) or 1
    width = _param(tp, "num_feature", 0, MAX_FEATURES)
    if num_feature is not None:
        width = num_feature if width is None else min(width, num_feature)
    raw_left = _ints(tree, "left_children", where)
    raw_right = _ints(tree, "right_children", where)
    raw_split = _ints(tree, "split_indices", where)
    left = _per_node(where, "left_children", raw_left, n)
    right = _per_node(where, "right_children", raw_right, n)
    split = _per_node(where, "split_indices", raw_split, n)
    for key in ("split_conditions", "default_left", "parents", "loss_changes",
                "sum_hessian", "split_type"):
        got = _length(tree, key)
        if got is not None and got != n:
            raise ModelFileError(f"{where}: '{key}' has {got} entries, num_nodes is {n}")
    got = _length(tree, "base_weights")
    if got is not None and got not in (n, n * slv):
        raise ModelFileError(f"{where}: 'base_weights' has {got} entries for {n} nodes")
    leaf = left == -1
    if "leaf_weights" in tree:
        # a vector-leaf tree (multi_output_tree): a leaf's right_children entry is its
        # row in leaf_weights (size_leaf_vector values per leaf)
        rows = (_length(tree, "leaf_weights") or 0) // slv
        leaf_rows = right[leaf]
        if leaf_rows.size and (leaf_rows.min() < 0 or leaf_rows.max() >= rows):
            raise ModelFileError(f"{where}: a leaf points outside 'leaf_weights'")
    elif not np.array_equal(leaf, right == -1):
        raise ModelFileError(f"{where}: a node has one child")
    children = np.concatenate((left[~leaf], right[~leaf]))
    if children.size and (children.min() < 1 or children.max() >= n):
        raise ModelFileError(f"{where}: a child index is outside the tree's {n} nodes")
    if np.unique(children).size != children.size:
        # every node has one parent and the root none: following children from the root
        # therefore ends at leaves (no cycle, no node reached twice)
        raise ModelFileError(f"{where}: a node is the child of two nodes (or a cycle)")
    parents = _ints(tree, "parents", where)
    if parents is not None:
        _check_parents(where, parents, left, right, leaf)
    used = split[~leaf]
    if used.size and (used.min() < 0 or (width is not None and used.max() >= width)):
        raise ModelFileError(f"{where}: a split uses feature {int(used.max())}, the model "
                             f"has {width} features")
    kinds = _ints(tree, "split_type", where)
    if kinds is not None and kinds.size:
        if kinds.min() < 0 or kinds.max() > 1:
            raise ModelFileError(f"{where}: 'split_type' holds a value other than 0 or 1")
        if np.any(kinds[~leaf] != 0):
            _check_categories(where, tree, n)
    return slv


_ROOT_PARENT = (-1, 2**31 - 1)  # what XGBoost writes as the root's parent


def _check_parents(where: str, parents: np.ndarray, left: np.ndarray, right: np.ndarray,
                   leaf: np.ndarray) -> None:
    """XGBoost walks `parents` up to the root (a node's depth): each must lead there, and a
    node's parent must be the node that has it as a child. Measured: one wrong entry is a
    SIGSEGV."""
    n = len(left)
    if len(parents) != n:
        raise ModelFileError(f"{where}: 'parents' has {len(parents)} entries, num_nodes is {n}")
    if int(parents[0]) not in _ROOT_PARENT:
        raise ModelFileError(f"{where}: the root has a parent ({int(parents[0])})")
    rest = parents[1:]
    if rest.size and (rest.min() < 0 or rest.max() >= n):
        raise ModelFileError(f"{where}: a parent index is outside the tree's {n} nodes")
    inner = np.flatnonzero(~leaf)
    if np.any(parents[left[inner]] != inner) or np.any(parents[right[inner]] != inner):
        raise ModelFileError(f"{where}: 'parents' disagrees with the children arrays")
    up = parents.copy()
    up[0] = 0
    for _ in range(max(1, int(n).bit_length()) + 1):  # pointer jumping: 2^k steps up
        up = up[up]
    if np.any(up != 0):  # nodes no longer in the tree (pruned) must lead to the root too
        raise ModelFileError(f"{where}: 'parents' has a cycle")


def _check_categories(where: str, tree: dict[str, Any], n: int) -> None:
    nodes = _ints(tree, "categories_nodes", where)
    seg = _ints(tree, "categories_segments", where)
    sizes = _ints(tree, "categories_sizes", where)
    cats = _ints(tree, "categories", where)
    if nodes is None or seg is None or sizes is None or cats is None:
        raise ModelFileError(f"{where}: categorical splits without their categories")
    if not len(nodes) == len(seg) == len(sizes):
        raise ModelFileError(f"{where}: categories_nodes/segments/sizes differ in length")
    if nodes.size and (nodes.min() < 0 or nodes.max() >= n):
        raise ModelFileError(f"{where}: a categorical node index is outside the tree")
    if seg.size and (seg.min() < 0 or sizes.min() < 0 or (seg + sizes).max() > len(cats)):
        raise ModelFileError(f"{where}: a category segment is outside 'categories'")
    if cats.size and (cats.min() < 0 or cats.max() >= MAX_CATEGORY):
        raise ModelFileError(f"{where}: a category value is outside 0..{MAX_CATEGORY - 1}")


def check_booster_document(doc: dict[str, Any]) -> None:
    """Raise ModelFileError when the parsed model holds something XGBoost's predictor
    would read out of bounds or loop on (see the module docstring)."""
    learner = doc.get("learner")
    if not isinstance(learner, dict):
        return  # XGBoost refuses a document without a learner itself
    lmp = learner.get("learner_model_param")
    num_feature = _param(lmp, "num_feature", 0, MAX_FEATURES)
    num_class = _param(lmp, "num_class", 0, MAX_OUTPUTS)
    num_target = _param(lmp, "num_target", 0, MAX_OUTPUTS)
    gb = learner.get("gradient_booster")
    if not isinstance(gb, dict):
        return
    if gb.get("name") == "dart":
        model = gb.get("gbtree", {}).get("model") if isinstance(gb.get("gbtree"), dict) else None
    elif gb.get("name") == "gbtree":
        model = gb.get("model")
    else:
        return  # gblinear has no index arrays; unknown boosters XGBoost refuses
    if not isinstance(model, dict):
        raise ModelFileError("gradient_booster.model is missing or not an object")
    trees = model.get("trees")
    if not isinstance(trees, list):
        raise ModelFileError("gradient_booster.model.trees is missing or not a list")
    declared = _param(model.get("gbtree_model_param"), "num_trees", 0, 1 << 31)
    if declared is not None and declared != len(trees):
        raise ModelFileError(f"num_trees says {declared}, the file holds {len(trees)} trees")
    leaf_size = 1
    for i, tree in enumerate(trees):
        leaf_size = max(leaf_size, _check_tree(i, tree, num_feature))
    # each class (target) has at least one tree per round, or one vector leaf slot
    outputs = max(len(trees), leaf_size, 1)
    for key, value in (("num_class", num_class), ("num_target", num_target)):
        if value is not None and value > outputs:
            raise ModelFileError(f"{key} is {value} but the model has {len(trees)} trees")
    groups = max(num_class or 0, num_target or 0, 1)
    info = _ints(model, "tree_info", "gradient_booster.model")
    if info is not None:
        if len(info) != len(trees):
            raise ModelFileError(f"tree_info has {len(info)} entries for {len(trees)} trees")
        if info.size and (info.min() < 0 or info.max() >= groups):
            raise ModelFileError(f"tree_info names an output group outside 0..{groups - 1}")
    indptr = _ints(model, "iteration_indptr", "gradient_booster.model")
    if indptr is not None and indptr.size and (
            indptr[0] != 0 or indptr[-1] != len(trees) or np.any(np.diff(indptr) < 0)):
        raise ModelFileError("iteration_indptr does not partition the tree list")
    if gb.get("name") == "dart":
        got = _length(gb, "weight_drop")
        if got is not None and got != len(trees):
            raise ModelFileError(f"weight_drop has {got} entries for {len(trees)} trees")


def checked_model_bytes(data: bytes, suffix: str) -> bytes:
    """`data` (a `.ubj` or `.json` file's bytes) parsed and checked; returns the bytes to
    hand to `Booster.load_model`, whose buffer loader tells the two formats apart by
    their first bytes (so leading whitespace and a UTF-8 BOM are dropped)."""
    if suffix == ".ubj":
        doc = parse_ubjson(data)
    else:
        data = data.removeprefix(b"\xef\xbb\xbf").lstrip()
        doc = parse_json_model(data)
    check_booster_document(doc)
    return data
