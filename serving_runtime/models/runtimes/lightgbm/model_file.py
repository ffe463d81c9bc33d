"""Checks and parses LightGBM's text model format before LightGBM's own loader sees it.

Measured with lightgbm 4.7 (`lgb.Booster(model_str=...)` then `predict`): its loader trusts
the file. `num_tree_per_iteration=0` kills the process with SIGFPE; an empty `objective=`,
a `parameters:` line without `:`, a `tree_sizes` entry past the end, `num_leaves=0`, a
child index, split feature or linear-leaf feature outside its array, a categorical
threshold beyond `cat_boundaries`, or an objective `num_class` above the header's all
SIGSEGV (or corrupt the heap); a cycle among the nodes, or an array shorter than
`num_leaves` (it reads the missing values as 0), loops forever in predict; and any error
inside a tree (`num_leaves=-5`, wrong `tree_sizes`, an array of the wrong length, a
negative `cat_boundaries`) is raised inside an OpenMP loop and aborts the process
(`terminate called without an active exception`). So here, every byte is checked first:

- UTF-8 text, `\\n` line ends (LightGBM writes no `\\r`, and `tree_sizes` counts bytes),
  no control characters; first line `tree`; `version` v3 or v4.
- Header: the keys LightGBM 4.x reads (num_class, num_tree_per_iteration, label_index,
  max_feature_idx, objective, average_output, feature_names, monotone_constraints,
  feature_infos, tree_sizes) are required where LightGBM writes them and fully checked;
  a line must read the same under LightGBM's `=` splitting as under ours; no duplicates.
  Unknown keys are tolerated (newer versions add keys) and reported in
  `ignored_header_keys`: the 4.x loader ignores them, so they cannot change what it does.
- `objective`: a known name with exactly the tokens LightGBM writes for it (`sigmoid:`,
  `num_class:` equal to the header's, `sqrt`); num_class == num_tree_per_iteration, and 1
  for every single-output objective (the predictor sizes its buffers from these).
- Trees are located exactly as LightGBM does (by the `tree_sizes` byte counts from the
  first `Tree=` line), numbered 0..n-1, and each holds only the 22 keys LightGBM writes,
  once each, followed by an empty line. Arrays have exactly the length LightGBM will read
  (num_leaves-1 per internal node, num_leaves per leaf); numbers use the decimal syntax
  LightGBM writes; leaf values, linear coefficients and shrinkage are finite; thresholds
  are finite or +-inf (LightGBM compares, never indexes with them), never NaN.
- Structure: children in range (>= 0: an internal node other than the root; < 0: ~leaf),
  every internal node and leaf reached exactly once from the root (no cycle, no sharing),
  split features in [0, max_feature_idx], decision_type with known bits only (missing
  type None/Zero/NaN), categorical nodes: integer threshold naming one cat_boundaries
  segment each, `num_cat` equal to their count, cat_boundaries from 0, non-decreasing and
  ending at len(cat_threshold), 32-bit bitset words.
- Linear trees (`linear_tree=True`) are validated fully rather than refused, because
  LightGBM writes them for an ordinary training option and they are a handful of extra
  arrays: leaf_const, num_features, leaf_features in [0, max_feature_idx] and finite
  leaf_coeff with matching counts. (The compiled fast path refuses them.)
- Sizes: max_feature_idx < `max_features`, num_class <= MAX_CLASSES, num_leaves <=
  MAX_LEAVES (LightGBM's own limit), depth <= MAX_TREE_DEPTH (see there), at most
  MAX_TOTAL_NODES nodes in all trees (checked before any array is split), the number of
  trees a non-zero multiple of num_tree_per_iteration. A model without trees is refused:
  LightGBM's header reader would then read the whole file as header.
- After the trees: `end of trees`, then only the feature importances (`name=number` for
  known feature names), a `parameters:` ... `end of parameters` section whose lines are
  `[name: value]` (the Python package turns them into JSON on load, so values are
  limited to what that JSON survives: no quotes or backslashes, numbers for the numeric
  parameters), and the Python package's `pandas_categorical:` JSON line, which must be the
  line `lightgbm.basic._load_pandas_categorical` finds and a list of category lists.

Only a model this module accepts may be handed to `lgb.Booster(model_str=...)`; the parsed
`LightGBMModel` is what LightGBM will read, number for number.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from serving_runtime.models.runtimes.native_errors import ModelFileError

#: all trees together: internal nodes + leaves (a 5M-node model is ~0.5 GB of text)
MAX_TOTAL_NODES = 5_000_000
#: num_class (and num_tree_per_iteration) bound
MAX_CLASSES = 65_536
#: LightGBM's own training limit on num_leaves
MAX_LEAVES = 131_072
#: internal nodes on a root-to-leaf path. LightGBM's predictor walks iteratively, but
#: dump_model() recurses per level (SIGSEGV at depth ~10,000 on an 8 MB stack, less on a
#: small thread stack) and predict(pred_contrib=True) allocates depth**2 (abort at 50,000);
#: trained trees are a few dozen levels deep.
MAX_TREE_DEPTH = 1_000
#: LightGBM's decision_type bits (tree.h): categorical, default left, missing type (2 bits)
CATEGORICAL_MASK = 1
DEFAULT_LEFT_MASK = 2
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_SHOW = 60  # characters of an offending value quoted in a message

_INT_TOKEN = r"-?\d+"
_DEC_TOKEN = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"  # what LightGBM's %.17g / << write
_ANY_FLOAT_TOKEN = rf"(?:{_DEC_TOKEN}|-?inf|-?nan)"


def _list_re(token: str) -> re.Pattern[str]:
    # space-separated tokens; LightGBM's readers skip repeated/leading/trailing spaces
    return re.compile(rf" *(?:{token}(?: +{token})*)? *")


_INT_LIST = _list_re(_INT_TOKEN)
_DEC_LIST = _list_re(_DEC_TOKEN)
_THRESHOLD_LIST = _list_re(rf"(?:{_DEC_TOKEN}|-?inf)")
_ANY_FLOAT_LIST = _list_re(_ANY_FLOAT_TOKEN)
_INT_RE = re.compile(_INT_TOKEN)
_DEC_RE = re.compile(_DEC_TOKEN)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_KEY = re.compile(r"[A-Za-z0-9_]+")
_FEATURE_INFO = re.compile(
    rf"none|\[{_ANY_FLOAT_TOKEN}:{_ANY_FLOAT_TOKEN}\]|{_INT_TOKEN}(?::{_INT_TOKEN})*")
# LightGBM refuses these in feature names at training time ("special JSON characters")
_FEATURE_NAME_BAD = re.compile(r'[",:\[\]{}\\]')
_PARAM_LINE = re.compile(r"\[([a-z0-9_]+): (.*)\]")
_PARAM_VALUE_BAD = re.compile(r'["\\]')
_IMPORTANCE = re.compile(r"(.+)=(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_PANDAS_KEY = "pandas_categorical:"
_IMPORTANCE_TITLES = ("feature_importances:", "feature importances:")  # 4.x, 3.x

_TREE_KEYS = frozenset({
    "num_leaves", "num_cat", "split_feature", "split_gain", "threshold", "decision_type",
    "left_child", "right_child", "leaf_value", "leaf_weight", "leaf_count",
    "internal_value", "internal_weight", "internal_count", "cat_boundaries",
    "cat_threshold", "is_linear", "leaf_const", "num_features", "leaf_features",
    "leaf_coeff", "shrinkage",
})
_LINEAR_KEYS = ("leaf_const", "num_features", "leaf_features", "leaf_coeff")
_HEADER_KEYS = frozenset({
    "version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx",
    "objective", "average_output", "feature_names", "monotone_constraints", "feature_infos",
    "tree_sizes",
})
_VERSIONS = ("v3", "v4")

# Objective names LightGBM's CreateObjectiveFunction knows, and the tokens its writer puts
# after each name (`binary sigmoid:1`, `multiclass num_class:3`, `regression sqrt`).
_OBJECTIVE_TOKENS: dict[str, frozenset[str]] = {
    "binary": frozenset({"sigmoid"}),
    "multiclass": frozenset({"num_class"}),
    "multiclassova": frozenset({"num_class", "sigmoid"}),
    "regression": frozenset({"sqrt"}),
    "regression_l1": frozenset({"sqrt"}),
    "quantile": frozenset({"sqrt"}),
    "fair": frozenset({"sqrt"}),
    "mape": frozenset({"sqrt"}),
    "huber": frozenset(),
    "poisson": frozenset(),
    "gamma": frozenset(),
    "tweedie": frozenset(),
    "cross_entropy": frozenset(),
    "cross_entropy_lambda": frozenset(),
    "lambdarank": frozenset(),
    "rank_xendcg": frozenset(),
    "custom": frozenset(),
}
MULTICLASS_OBJECTIVES = frozenset({"multiclass", "multiclassova"})

# Parameter types that matter when the Python package turns `[name: value]` lines into
# JSON (`Booster._get_loaded_param`): LightGBM 4.7's doubles are printed from its own
# parse (garbage raises), numeric vectors are pasted raw between brackets.
_DOUBLE_PARAMS = frozenset({
    "learning_rate", "histogram_pool_size", "min_sum_hessian_in_leaf", "bagging_fraction",
    "pos_bagging_fraction", "neg_bagging_fraction", "feature_fraction",
    "feature_fraction_bynode", "early_stopping_min_delta", "max_delta_step", "lambda_l1",
    "lambda_l2", "linear_lambda", "min_gain_to_split", "drop_rate", "skip_drop", "top_rate",
    "other_rate", "cat_l2", "cat_smooth", "monotone_penalty", "refit_decay_rate",
    "cegb_tradeoff", "cegb_penalty_split", "path_smooth", "scale_pos_weight", "sigmoid",
    "alpha", "fair_c", "poisson_max_delta_step", "tweedie_variance_power",
    "lambdarank_position_bias_regularization",
})
_NUMERIC_VECTOR_PARAMS = frozenset({
    "monotone_constraints", "feature_contri", "cegb_penalty_feature_lazy",
    "cegb_penalty_feature_coupled", "interaction_constraints", "max_bin_by_feature",
    "ignore_column", "categorical_feature", "label_gain", "eval_at", "auc_mu_weights",
})
_NUMERIC_VECTOR = re.compile(r"[-+0-9.eE,\[\] ]*")


@dataclass(frozen=True)
class Objective:
    """The `objective=` line: `name` plus the parameters LightGBM's converter uses."""

    name: str
    #: the line's value as written, e.g. "binary sigmoid:1"
    text: str
    #: binary / multiclassova: probability = 1 / (1 + exp(-sigmoid * raw))
    sigmoid: float | None = None
    #: multiclass / multiclassova
    num_class: int | None = None
    #: regression family with reg_sqrt: prediction = sign(raw) * raw**2
    sqrt: bool = False


@dataclass(frozen=True)
class Tree:
    """One `Tree=i` block. Internal node i goes to left_child[i] / right_child[i]; a child
    >= 0 is an internal node, a child < 0 is leaf ~child. Linear trees: leaf `j` predicts
    leaf_const[j] + sum(leaf_coeff[j][k] * x[leaf_features[j][k]])."""

    index: int
    num_leaves: int
    num_cat: int
    split_feature: tuple[int, ...]
    threshold: tuple[float, ...]
    decision_type: tuple[int, ...]
    left_child: tuple[int, ...]
    right_child: tuple[int, ...]
    leaf_value: tuple[float, ...]
    cat_boundaries: tuple[int, ...]
    cat_threshold: tuple[int, ...]
    is_linear: bool
    leaf_const: tuple[float, ...]
    leaf_features: tuple[tuple[int, ...], ...]
    leaf_coeff: tuple[tuple[float, ...], ...]
    shrinkage: float
    #: longest root-to-leaf path in internal nodes (0 for a single leaf)
    depth: int

    @property
    def num_internal(self) -> int:
        return self.num_leaves - 1

    def is_categorical(self, node: int) -> bool:
        return bool(self.decision_type[node] & CATEGORICAL_MASK)

    def default_left(self, node: int) -> bool:
        return bool(self.decision_type[node] & DEFAULT_LEFT_MASK)

    def missing_type(self, node: int) -> int:
        return (self.decision_type[node] >> 2) & 3


@dataclass(frozen=True)
class LightGBMModel:
    """A checked LightGBM text model (what `Booster.model_to_string()` writes)."""

    version: str
    num_class: int
    num_tree_per_iteration: int
    label_index: int
    max_feature_idx: int
    #: None when the file has no objective line (a custom objective): raw scores
    objective: Objective | None
    average_output: bool
    feature_names: tuple[str, ...]
    feature_infos: tuple[str, ...]
    monotone_constraints: tuple[int, ...]
    trees: tuple[Tree, ...]
    #: the `parameters:` section as (name, value) pairs (training parameters)
    parameters: tuple[tuple[str, str], ...]
    #: whether the file ends with the Python package's `pandas_categorical:` line
    has_pandas_categorical: bool
    #: its value: one category list per pandas categorical column, or None
    pandas_categorical: tuple[tuple[Any, ...], ...] | None
    #: header keys LightGBM 4.x does not read (tolerated, not used)
    ignored_header_keys: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return self.max_feature_idx + 1

    @property
    def num_iterations(self) -> int:
        return len(self.trees) // self.num_tree_per_iteration


def parse_model_text(data: bytes, *, max_features: int = 65_536) -> LightGBMModel:
    """Check `data` (a LightGBM text model) and return what LightGBM would read from it.

    Raises ModelFileError naming the problem and where it is (see the module docstring)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelFileError(f"expected the model file's bytes, got {type(data).__name__}")
    raw = bytes(data)
    text = _decode(raw)
    first_tree = re.search(rb"(?m)^Tree=", raw)
    if first_tree is None:
        raise ModelFileError("no `Tree=` line: the model has no trees (or is not a "
                             "LightGBM text model)")
    # the header is everything before the first `Tree=` line, as LightGBM reads it
    header = _parse_header(raw[: first_tree.start()].decode("utf-8"), max_features)
    budget = _Budget()
    trees, end = _parse_trees(raw, first_tree.start(), header, budget)
    if len(trees) % header.num_tree_per_iteration:
        raise ModelFileError(
            f"{len(trees)} trees is not a multiple of num_tree_per_iteration="
            f"{header.num_tree_per_iteration}")
    params, pandas_present, pandas = _parse_trailer(raw[end:].decode("utf-8"), text,
                                                    set(header.feature_names))
    return LightGBMModel(
        version=header.version, num_class=header.num_class,
        num_tree_per_iteration=header.num_tree_per_iteration,
        label_index=header.label_index, max_feature_idx=header.max_feature_idx,
        objective=header.objective, average_output=header.average_output,
        feature_names=header.feature_names, feature_infos=header.feature_infos,
        monotone_constraints=header.monotone_constraints, trees=tuple(trees),
        parameters=params, has_pandas_categorical=pandas_present,
        pandas_categorical=pandas, ignored_header_keys=header.ignored)


# --------------------------------------------------------------------------- helpers


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOW else value[:_SHOW] + "...")


def _decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ModelFileError(f"not UTF-8 text: invalid byte 0x{raw[exc.start]:02x} at "
                             f"offset {exc.start} (line {line})") from None
    bad = _CONTROL.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        what = ("a carriage return (LightGBM writes \\n line ends; its tree_sizes count "
                "bytes)" if bad.group() == "\r" else f"control character {bad.group()!r}")
        raise ModelFileError(f"line {line}: {what}")
    return text


def _int(value: str, where: str, lo: int = _INT32_MIN, hi: int = _INT32_MAX) -> int:
    if not _INT_RE.fullmatch(value):
        raise ModelFileError(f"{where} is {_show(value)}, not an integer")
    v = int(value)
    if not lo <= v <= hi:
        raise ModelFileError(f"{where} is {v}, outside [{lo}, {hi}]")
    return v


def _finite(value: str, where: str) -> float:
    if not _DEC_RE.fullmatch(value):
        raise ModelFileError(f"{where} is {_show(value)}, not a decimal number")
    v = float(value)
    if not math.isfinite(v):
        raise ModelFileError(f"{where} is {_show(value)}, which overflows a double")
    return v


class _Budget:
    """Counts nodes (and categorical bitset words) across trees against MAX_TOTAL_NODES."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used > MAX_TOTAL_NODES:
            raise ModelFileError(f"{where}: the model exceeds {MAX_TOTAL_NODES:,} nodes in "
                                 "all trees")


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class _Header:
    version: str
    num_class: int
    num_tree_per_iteration: int
    label_index: int
    max_feature_idx: int
    objective: Objective | None
    average_output: bool
    feature_names: tuple[str, ...]
    feature_infos: tuple[str, ...]
    monotone_constraints: tuple[int, ...]
    tree_sizes: tuple[int, ...]
    ignored: tuple[str, ...]


def _lightgbm_key_value(line: str) -> tuple[str, str]:
    """How GBDT::LoadModelFromString reads a header line: Common::Split on '=' (empty
    pieces dropped); two pieces are key and value; more are an error except for
    feature_names and monotone_constraints, whose value is the rest of the line."""
    parts = [p for p in line.split("=") if p]
    if not parts:
        return "", ""
    if len(parts) == 1:
        return parts[0], ""
    if len(parts) == 2:
        return parts[0], parts[1]
    if parts[0] in ("feature_names", "monotone_constraints"):
        return parts[0], line[len(parts[0]) + 1:]
    raise ModelFileError(f"header line {_show(line)} has more than one '='")


def _header_lines(text: str) -> dict[str, str]:
    lines = text.split("\n")
    if lines[0] != "tree":
        raise ModelFileError(f"line 1 is {_show(lines[0])}, not `tree` (not a LightGBM "
                             "text model, or not a tree model)")
    found: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not _KEY.fullmatch(key):
            raise ModelFileError(f"header line {number} {_show(line)} is not `key=value`")
        if (key, value) != _lightgbm_key_value(line):
            raise ModelFileError(f"header line {number} {_show(line)} reads differently in "
                                 "LightGBM (leading/trailing/doubled '=')")
        if key in found:
            raise ModelFileError(f"header line {number}: {key} appears twice")
        if key == "average_output" and (sep or value):
            raise ModelFileError(f"header line {number}: average_output takes no value "
                                 f"(LightGBM only looks at its presence), got {_show(line)}")
        found[key] = value
    return found


def _require(found: dict[str, str], key: str) -> str:
    if key not in found:
        raise ModelFileError(f"header: missing {key}=")
    return found[key]


def _parse_header(text: str, max_features: int) -> _Header:
    found = _header_lines(text)
    version = _require(found, "version")
    if version not in _VERSIONS:
        raise ModelFileError(f"header: version={_show(version)} is not supported "
                             f"(LightGBM 3.x/4.x write {'/'.join(_VERSIONS)})")
    num_class = _int(_require(found, "num_class"), "header: num_class", 1, MAX_CLASSES)
    # LightGBM defaults a missing num_tree_per_iteration to num_class
    ntpi = _int(found.get("num_tree_per_iteration", str(num_class)),
                "header: num_tree_per_iteration", 1, MAX_CLASSES)
    if ntpi != num_class:
        # its predictor sizes outputs by num_class but writes num_tree_per_iteration values
        raise ModelFileError(f"header: num_tree_per_iteration={ntpi} differs from "
                             f"num_class={num_class}")
    label_index = _int(_require(found, "label_index"), "header: label_index", 0)
    max_feature_idx = _int(_require(found, "max_feature_idx"), "header: max_feature_idx",
                           0, max(0, max_features - 1))
    n = max_feature_idx + 1
    objective = (_parse_objective(found["objective"], num_class)
                 if "objective" in found else None)
    return _Header(
        version=version, num_class=num_class, num_tree_per_iteration=ntpi,
        label_index=label_index, max_feature_idx=max_feature_idx, objective=objective,
        average_output="average_output" in found,
        feature_names=_feature_names(_require(found, "feature_names"), n),
        feature_infos=_feature_infos(_require(found, "feature_infos"), n),
        monotone_constraints=_monotone(found.get("monotone_constraints"), n),
        tree_sizes=_tree_sizes(_require(found, "tree_sizes")),
        ignored=tuple(k for k in found if k not in _HEADER_KEYS))


def _split_n(value: str, n: int, what: str) -> list[str]:
    # count before splitting: a hostile line must not be split into millions of strings
    got = value.count(" ") + 1
    if got != n:
        raise ModelFileError(f"header: {what} has {got} entries; max_feature_idx says {n}")
    return value.split(" ")


def _feature_names(value: str, n: int) -> tuple[str, ...]:
    names = _split_n(value, n, "feature_names")
    for i, name in enumerate(names):
        if not name:
            raise ModelFileError(f"header: feature_names[{i}] is empty (doubled space)")
        if _FEATURE_NAME_BAD.search(name):
            raise ModelFileError(f"header: feature_names[{i}] {_show(name)} has a character "
                                 "LightGBM refuses in feature names")
    return tuple(names)


def _feature_infos(value: str, n: int) -> tuple[str, ...]:
    infos = _split_n(value, n, "feature_infos")
    for i, info in enumerate(infos):
        if not _FEATURE_INFO.fullmatch(info):
            raise ModelFileError(f"header: feature_infos[{i}] is {_show(info)}")
    return tuple(infos)


def _monotone(value: str | None, n: int) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(_int(v, f"header: monotone_constraints[{i}]", -1, 1)
                 for i, v in enumerate(_split_n(value, n, "monotone_constraints")))


def _tree_sizes(value: str) -> tuple[int, ...]:
    if not value:
        raise ModelFileError("header: tree_sizes is empty: the model has no trees")
    if value.count(" ") >= MAX_TOTAL_NODES:
        raise ModelFileError(f"header: tree_sizes lists more than {MAX_TOTAL_NODES:,} trees")
    return tuple(_int(v, f"header: tree_sizes[{i}]", 1, 2**62)
                 for i, v in enumerate(value.split(" ")))


def _parse_objective(text: str, num_class: int) -> Objective:
    tokens = text.split(" ")
    name = tokens[0]
    if name not in _OBJECTIVE_TOKENS:
        raise ModelFileError(f"header: objective {_show(name)} is not an objective LightGBM "
                             "knows" + (" (empty)" if not name else ""))
    allowed = _OBJECTIVE_TOKENS[name]
    params: dict[str, str] = {}
    for tok in tokens[1:]:
        key, sep, value = tok.partition(":")
        # `sqrt` is a bare flag; the others are `key:value` (LightGBM ignores `a:b:c`)
        well_formed = (not sep) if key == "sqrt" else bool(value) and ":" not in value
        if key not in allowed or key in params or not well_formed:
            raise ModelFileError(f"header: objective={_show(text)}: unexpected token "
                                 f"{_show(tok)} for {name}")
        params[key] = value
    sigmoid = nclass = None
    if "sigmoid" in allowed:
        if "sigmoid" not in params:
            raise ModelFileError(f"header: objective={_show(text)} lacks sigmoid:")
        sigmoid = _finite(params["sigmoid"], "header: objective sigmoid")
        if sigmoid <= 0:
            raise ModelFileError(f"header: objective sigmoid is {sigmoid}; it must be > 0")
    if name in MULTICLASS_OBJECTIVES:
        if "num_class" not in params:
            raise ModelFileError(f"header: objective={_show(text)} lacks num_class:")
        nclass = _int(params["num_class"], "header: objective num_class", 2, MAX_CLASSES)
        if nclass != num_class:
            # LightGBM's softmax writes objective-num_class outputs into a num_class buffer
            raise ModelFileError(f"header: objective num_class:{nclass} differs from "
                                 f"num_class={num_class}")
    elif name != "custom" and num_class != 1:
        raise ModelFileError(f"header: objective {name} has one output but num_class="
                             f"{num_class}")
    return Objective(name=name, text=text, sigmoid=sigmoid, num_class=nclass,
                     sqrt="sqrt" in params)


# --------------------------------------------------------------------------- trees


def _parse_trees(raw: bytes, start: int, header: _Header,
                 budget: _Budget) -> tuple[list[Tree], int]:
    """Trees at the offsets LightGBM uses: tree i starts sum(tree_sizes[:i]) bytes after
    the first `Tree=` line. Returns the trees and the offset just past the last one."""
    trees = []
    pos = start
    for i, size in enumerate(header.tree_sizes):
        block = raw[pos:pos + size]
        if len(block) < size:
            raise ModelFileError(f"Tree={i}: tree_sizes[{i}]={size} runs past the end of "
                                 f"the file (truncated at byte {len(raw)})")
        trees.append(_parse_tree(i, block, header, budget))
        pos += size
    return trees, pos


def _tree_fields(i: int, block: bytes) -> dict[str, str]:
    where = f"Tree={i}"
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise ModelFileError(f"{where}: non-ASCII bytes inside the tree") from None
    lines = text.split("\n")
    if lines[0] != where:
        raise ModelFileError(f"{where}: tree_sizes points at {_show(lines[0])}, not "
                             f"`{where}` (tree_sizes do not match the trees)")
    try:
        blank = lines.index("", 1)
    except ValueError:
        raise ModelFileError(f"{where}: no empty line ends the tree within its "
                             "tree_sizes bytes") from None
    if any(lines[blank:]):
        raise ModelFileError(f"{where}: text after the tree's empty line inside its "
                             "tree_sizes bytes")
    fields: dict[str, str] = {}
    for line in lines[1:blank]:
        key, sep, value = line.partition("=")
        if not sep:
            raise ModelFileError(f"{where}: line {_show(line)} is not key=value")
        if key not in _TREE_KEYS:
            raise ModelFileError(f"{where}: unknown key {_show(key)}")
        if key in fields:
            raise ModelFileError(f"{where}: {key} appears twice")
        fields[key] = value
    return fields


class _TreeReader:
    """Parses one tree's arrays, each with the length LightGBM will read."""

    def __init__(self, index: int, fields: dict[str, str]) -> None:
        self.where = f"Tree={index}"
        self.fields = fields

    def need(self, key: str) -> str:
        if key not in self.fields:
            raise ModelFileError(f"{self.where}: missing {key}=")
        return self.fields[key]

    def _tokens(self, key: str, n: int, pattern: re.Pattern[str], kind: str) -> list[str]:
        value = self.need(key)
        # one regex over the line (C speed), then split: both linear in the line's length
        tokens = value.split()
        if not pattern.fullmatch(value):
            j, bad = next(((j, t) for j, t in enumerate(tokens) if not pattern.fullmatch(t)),
                          (0, value))
            raise ModelFileError(f"{self.where}: {key}[{j}] is {_show(bad)}, not {kind}")
        if len(tokens) != n:
            raise ModelFileError(f"{self.where}: {key} has {len(tokens)} values; "
                                 f"the tree needs {n}")
        return tokens

    def ints(self, key: str, n: int, lo: int = _INT32_MIN, hi: int = _INT32_MAX,
             optional: bool = False) -> tuple[int, ...]:
        if optional and key not in self.fields:
            return (0,) * n
        values = tuple(map(int, self._tokens(key, n, _INT_LIST, "an integer")))
        for j, v in enumerate(values):
            if not lo <= v <= hi:
                raise ModelFileError(f"{self.where}: {key}[{j}] is {v}, outside [{lo}, {hi}]")
        return values

    def floats(self, key: str, n: int, *, finite: bool, threshold: bool = False,
               optional: bool = False) -> tuple[float, ...]:
        if optional and key not in self.fields:
            return (0.0,) * n
        pattern = (_DEC_LIST if finite else _THRESHOLD_LIST if threshold
                   else _ANY_FLOAT_LIST)
        tokens = self._tokens(key, n, pattern, "a decimal number")
        values = tuple(map(float, tokens))
        if finite or threshold:
            for j, v in enumerate(values):
                # a threshold may be the literal `inf`, never a decimal that overflows
                if not math.isfinite(v) and (finite or "inf" not in tokens[j]):
                    raise ModelFileError(f"{self.where}: {key}[{j}] is {tokens[j]!r}; it "
                                         "must be finite")
        return values


def _parse_tree(i: int, block: bytes, header: _Header, budget: _Budget) -> Tree:
    r = _TreeReader(i, _tree_fields(i, block))
    where = r.where
    num_leaves = _int(r.need("num_leaves"), f"{where}: num_leaves", 1, MAX_LEAVES)
    budget.take(2 * num_leaves - 1, where)
    n_int = num_leaves - 1
    num_cat = _int(r.need("num_cat"), f"{where}: num_cat", 0, n_int)
    leaf_value = r.floats("leaf_value", num_leaves, finite=True)
    shrinkage = (_finite(r.fields["shrinkage"], f"{where}: shrinkage")
                 if "shrinkage" in r.fields else 1.0)
    is_linear = _int(r.fields.get("is_linear", "0"), f"{where}: is_linear", 0, 1) == 1
    if not n_int:
        # LightGBM skips these in a one-leaf tree (which it writes with empty values)
        for key in ("split_feature", "threshold", "decision_type", "left_child",
                    "right_child"):
            if r.fields.get(key, ""):
                raise ModelFileError(f"{where}: {key} must be empty in a one-leaf tree")
    split_feature = r.ints("split_feature", n_int, 0, header.max_feature_idx,
                           optional=not n_int)
    threshold = r.floats("threshold", n_int, finite=False, threshold=True,
                         optional=not n_int)
    decision_type = r.ints("decision_type", n_int, 0, 15, optional=True)
    left = r.ints("left_child", n_int, optional=not n_int)
    right = r.ints("right_child", n_int, optional=not n_int)
    # arrays LightGBM keeps for SHAP / refit / feature importance only: lengths and syntax
    r.floats("split_gain", n_int, finite=False, optional=True)
    r.floats("internal_value", n_int, finite=False, optional=True)
    r.floats("internal_weight", n_int, finite=False, optional=True)
    r.ints("internal_count", n_int, 0, optional=True)
    r.floats("leaf_weight", num_leaves, finite=False, optional=True)
    r.ints("leaf_count", num_leaves, 0, optional=True)
    for node, dt in enumerate(decision_type):
        if (dt >> 2) & 3 == 3:
            raise ModelFileError(f"{where}: decision_type[{node}] is {dt}: missing type 3 "
                                 "does not exist")
    depth = _check_structure(where, num_leaves, left, right)
    cat_boundaries, cat_threshold = _check_categorical(r, num_cat, threshold,
                                                       decision_type, budget)
    linear = _check_linear(r, num_leaves, is_linear, header.max_feature_idx, budget)
    return Tree(
        index=i, num_leaves=num_leaves, num_cat=num_cat, split_feature=split_feature,
        threshold=threshold, decision_type=decision_type, left_child=left,
        right_child=right, leaf_value=leaf_value, cat_boundaries=cat_boundaries,
        cat_threshold=cat_threshold, is_linear=is_linear, leaf_const=linear[0],
        leaf_features=linear[1], leaf_coeff=linear[2], shrinkage=shrinkage, depth=depth)


def _check_child(where: str, side: str, node: int, child: int, n_int: int,
                 num_leaves: int) -> None:
    if child >= 0:
        if child >= n_int:
            raise ModelFileError(f"{where}: {side}[{node}] is {child}; the tree has {n_int} "
                                 "internal nodes")
        if child == 0:
            raise ModelFileError(f"{where}: {side}[{node}] is 0, the root (a cycle)")
    elif ~child >= num_leaves:
        raise ModelFileError(f"{where}: {side}[{node}] is {child}, leaf {~child}; the tree "
                             f"has {num_leaves} leaves")


def _check_structure(where: str, num_leaves: int, left: tuple[int, ...],
                     right: tuple[int, ...]) -> int:
    """Children in range and every node reached exactly once from the root (LightGBM's
    predictor walks `while (node >= 0)`: a cycle never ends). Returns the depth."""
    n_int = num_leaves - 1
    if n_int == 0:
        return 0
    for side, children in (("left_child", left), ("right_child", right)):
        for node, child in enumerate(children):
            _check_child(where, side, node, child, n_int, num_leaves)
    seen_node = bytearray(n_int)
    seen_leaf = bytearray(num_leaves)
    seen_node[0] = 1
    stack = [(0, 1)]
    depth = 0
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        for child in (left[node], right[node]):
            seen = seen_node if child >= 0 else seen_leaf
            k = child if child >= 0 else ~child
            if seen[k]:
                what = f"node {k}" if child >= 0 else f"leaf {k}"
                raise ModelFileError(f"{where}: {what} is reached twice from the root "
                                     "(a cycle or a shared child)")
            seen[k] = 1
            if child >= 0:
                stack.append((child, d + 1))
    if not all(seen_node):
        raise ModelFileError(f"{where}: node {seen_node.index(0)} is not reachable from "
                             "the root")
    if not all(seen_leaf):
        raise ModelFileError(f"{where}: leaf {seen_leaf.index(0)} is not reachable from "
                             "the root")
    if depth > MAX_TREE_DEPTH:
        raise ModelFileError(f"{where}: the tree is {depth} levels deep; at most "
                             f"{MAX_TREE_DEPTH} are accepted (LightGBM's dump and SHAP "
                             "recurse per level)")
    return depth


def _check_categorical(r: _TreeReader, num_cat: int, threshold: tuple[float, ...],
                       decision_type: tuple[int, ...],
                       budget: _Budget) -> tuple[tuple[int, ...], tuple[int, ...]]:
    where = r.where
    cat_nodes = [n for n, dt in enumerate(decision_type) if dt & CATEGORICAL_MASK]
    if len(cat_nodes) != num_cat:
        # with num_cat=0 LightGBM would even treat categorical nodes as numerical ones
        raise ModelFileError(f"{where}: num_cat={num_cat} but {len(cat_nodes)} nodes are "
                             "categorical")
    if num_cat == 0:
        for key in ("cat_boundaries", "cat_threshold"):
            if key in r.fields:
                raise ModelFileError(f"{where}: {key} in a tree with num_cat=0")
        return (), ()
    bounds = r.ints("cat_boundaries", num_cat + 1, 0)
    if bounds[0] != 0:
        raise ModelFileError(f"{where}: cat_boundaries[0] is {bounds[0]}, not 0")
    for j in range(num_cat):
        if bounds[j + 1] < bounds[j]:
            raise ModelFileError(f"{where}: cat_boundaries[{j + 1}]={bounds[j + 1]} is below "
                                 f"cat_boundaries[{j}]={bounds[j]}")
    budget.take(bounds[-1], where)
    words = r.ints("cat_threshold", bounds[-1], 0, 2**32 - 1)
    used = set()
    for node in cat_nodes:
        t = threshold[node]
        if not math.isfinite(t) or t != int(t):
            raise ModelFileError(f"{where}: threshold[{node}] of a categorical node is {t!r}, "
                                 "not a cat_boundaries index")
        k = int(t)
        if not 0 <= k < num_cat:
            raise ModelFileError(f"{where}: threshold[{node}] of a categorical node is {k}; "
                                 f"num_cat is {num_cat}")
        if k in used:
            raise ModelFileError(f"{where}: categorical segment {k} is used by two nodes")
        used.add(k)
    return bounds, words


def _check_linear(r: _TreeReader, num_leaves: int, is_linear: bool, max_feature_idx: int,
                  budget: _Budget) -> tuple[tuple[float, ...], tuple[tuple[int, ...], ...],
                                            tuple[tuple[float, ...], ...]]:
    where = r.where
    if not is_linear:
        for key in _LINEAR_KEYS:
            if key in r.fields:
                raise ModelFileError(f"{where}: {key} in a tree with is_linear=0")
        return (), (), ()
    const = r.floats("leaf_const", num_leaves, finite=True)
    counts = r.ints("num_features", num_leaves, 0, max_feature_idx + 1)
    total = sum(counts)
    budget.take(total, where)
    if total == 0:  # the writer still emits the lines (spaces only); LightGBM skips them
        for key in ("leaf_features", "leaf_coeff"):
            if r.fields.get(key, "").strip():
                raise ModelFileError(f"{where}: {key} has values but num_features are all 0")
        return const, ((),) * num_leaves, ((),) * num_leaves
    feats = r.ints("leaf_features", total, 0, max_feature_idx)
    coeffs = r.floats("leaf_coeff", total, finite=True)
    f_out, c_out, pos = [], [], 0
    for c in counts:
        f_out.append(feats[pos:pos + c])
        c_out.append(coeffs[pos:pos + c])
        pos += c
    return const, tuple(f_out), tuple(c_out)


# --------------------------------------------------------------------------- trailer


def _parse_trailer(text: str, whole: str, feature_names: set[str]
                   ) -> tuple[tuple[tuple[str, str], ...], bool,
                              tuple[tuple[Any, ...], ...] | None]:
    """`end of trees`, feature importances, parameters, pandas_categorical."""
    lines = text.split("\n")
    if lines[0] != "end of trees":
        raise ModelFileError(f"after the last tree: {_show(lines[0])} where `end of trees` "
                             "belongs (tree_sizes or the tree count is wrong, or the file "
                             "is truncated)")
    i = _skip_blank(lines, 1)
    if i < len(lines) and lines[i] in _IMPORTANCE_TITLES:
        i += 1
        while i < len(lines) and lines[i]:
            m = _IMPORTANCE.fullmatch(lines[i])
            if m is None or m.group(1) not in feature_names:
                raise ModelFileError(f"feature importances: line {_show(lines[i])} is not "
                                     "`feature=number`")
            i += 1
        i = _skip_blank(lines, i)
    params: list[tuple[str, str]] = []
    if i < len(lines) and lines[i] == "parameters:":
        i = _parse_parameters(lines, i + 1, params)
        i = _skip_blank(lines, i)
    pandas_line = None
    if i < len(lines) and lines[i].startswith(_PANDAS_KEY):
        pandas_line = lines[i]
        i = _skip_blank(lines, i + 1)
    if i < len(lines):
        raise ModelFileError(f"after the trees: unexpected line {_show(lines[i])}")
    present, pandas = _pandas_categorical(whole)
    if present != (pandas_line is not None):
        raise ModelFileError("pandas_categorical: the line is not where the Python package "
                             "looks for it (the last line)")
    return tuple(params), present, pandas


def _skip_blank(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i]:
        i += 1
    return i


def _parse_parameters(lines: list[str], i: int, out: list[tuple[str, str]]) -> int:
    seen: set[str] = set()
    while i < len(lines):
        line = lines[i]
        i += 1
        if line == "end of parameters":
            return i
        if not line:
            continue
        m = _PARAM_LINE.fullmatch(line)
        if m is None:
            # GBDT::GetLoadedParam indexes the ':'-split pieces unchecked: a crash
            raise ModelFileError(f"parameters: line {_show(line)} is not `[name: value]`")
        name, value = m.groups()
        _check_parameter(name, value)
        if name in seen:
            raise ModelFileError(f"parameters: {name} appears twice")
        seen.add(name)
        out.append((name, value))
    raise ModelFileError("parameters: no `end of parameters` line (truncated?)")


def _check_parameter(name: str, value: str) -> None:
    """The Python package json.loads what GetLoadedParam builds from these lines."""
    if _PARAM_VALUE_BAD.search(value):
        raise ModelFileError(f"parameters: {name} value {_show(value)} has a quote or "
                             "backslash")
    if not value:
        return
    if name in _DOUBLE_PARAMS and not _DEC_RE.fullmatch(value):
        raise ModelFileError(f"parameters: {name} is {_show(value)}, not a number")
    if name in _NUMERIC_VECTOR_PARAMS:
        try:
            parsed = (json.loads(f"[{value}]")
                      if _NUMERIC_VECTOR.fullmatch(value) and len(value) < 100_000 else None)
        except (ValueError, RecursionError):
            parsed = None
        if parsed is None or not _numbers_only(parsed, 3):
            raise ModelFileError(f"parameters: {name} is {_show(value)}, not a list of "
                                 "numbers")


def _numbers_only(value: Any, depth: int) -> bool:
    if isinstance(value, list):
        return depth > 0 and all(_numbers_only(v, depth - 1) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def _pandas_categorical(whole: str) -> tuple[bool, tuple[tuple[Any, ...], ...] | None]:
    """The line lightgbm.basic._load_pandas_categorical(model_str=...) reads, checked:
    `null` or a list of category lists (str/int/float/bool)."""
    idx = whole.rfind("\n", 0, -len(_PANDAS_KEY))
    last_line = whole[idx:].strip()
    if not last_line.startswith(_PANDAS_KEY):
        return False, None
    try:
        value = json.loads(last_line[len(_PANDAS_KEY):])
    except (ValueError, RecursionError):
        raise ModelFileError("pandas_categorical: not valid JSON") from None
    if value is None:
        return True, None
    if not isinstance(value, list) or not all(
            isinstance(col, list) and all(isinstance(c, str | int | float | bool)
                                          for c in col) for col in value):
        raise ModelFileError("pandas_categorical: not a list of category lists")
    return True, tuple(tuple(col) for col in value)
