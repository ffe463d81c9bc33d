"""Strict conversion of feature columns ({name: [values]}) to a float64 matrix in the
model's feature order. Every rejection names the offending features, because the
caller (a trading engine) must be able to fix its request from the message alone.

The value rule, for every model served here: a finite JSON number (not a boolean) of
magnitude at most FLOAT32_MAX. scikit-learn's trees cast their input to float32 (1e39
becomes inf and scikit-learn raises) and XGBoost does too (inf then silently takes one
branch of every split): both compute in float32. The same bound for the float64
models (LightGBM, LogisticRegression) keeps one request valid for any model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving_runtime.errors import InvalidInputError, echo

# bool is an int subclass in Python, but true/false is not a feature value: compare exact
# types, not isinstance.
NUMERIC_TYPES = frozenset((int, float))
_MAX_NAMES_IN_MESSAGE = 20
_LIST_ONLY = frozenset((list,))
#: the largest float32 (numpy.finfo(numpy.float32).max), the bound on every feature value
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_RULE = (f"the models compute in float32: every value must be a finite number of "
                f"magnitude at most {FLOAT32_MAX!r}")


def name_list(names: Sequence[str]) -> str:
    """`a, b, c` — truncated so a 10 000-column mistake does not echo a huge message (and
    each name shortened and made encodable: names may come from the request)."""
    shown = ", ".join(echo(n) for n in names[:_MAX_NAMES_IN_MESSAGE])
    extra = len(names) - _MAX_NAMES_IN_MESSAGE
    return f"{shown} (and {extra} more)" if extra > 0 else shown


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def check_feature_names(
    given: Any, feature_names: Sequence[str], feature_index: Mapping[str, int], *, what: str
) -> None:
    """Raise 422 naming missing and unknown features; `given` iterates over names."""
    if len(given) == len(feature_names) and all(map(feature_index.__contains__, given)):
        return  # the usual case, decided in C (map) without building lists
    unknown = [k for k in given if k not in feature_index]
    missing = [n for n in feature_names if n not in given] if (
        unknown or len(given) != len(feature_names)
    ) else []
    if not unknown and not missing:
        return
    parts = []
    if missing:
        parts.append(f"missing features: {name_list(missing)}")
    if unknown:
        parts.append(f"unknown features: {name_list(unknown)}")
    raise InvalidInputError(
        f"{'; '.join(parts)} (the model expects {what}: {name_list(list(feature_names))})"
    )


def columns_to_matrix(
    features: Any, feature_names: Sequence[str], feature_index: Mapping[str, int]
) -> np.ndarray:
    """Turn `{name: [v_row0, v_row1, ...]}` into a C-contiguous (rows, n_features) float64
    matrix ordered like `feature_names`. Raises InvalidInputError (422)."""
    if type(features) is not dict:
        raise InvalidInputError(
            f"'features' must be an object mapping feature name to a list of values, "
            f"got {_type_name(features)}"
        )
    if not features:
        raise InvalidInputError(
            f"empty input: 'features' has no columns (the model expects: "
            f"{name_list(list(feature_names))})"
        )
    check_feature_names(features, feature_names, feature_index, what="columns")
    cols = [features[n] for n in feature_names]
    not_lists = [] if _LIST_ONLY.issuperset(map(type, cols)) else [
        n for n, c in zip(feature_names, cols, strict=True) if type(c) is not list]
    if not_lists:
        kinds = ", ".join(
            f"{echo(n)} ({_type_name(features[n])})" for n in not_lists[:_MAX_NAMES_IN_MESSAGE]
        )
        raise InvalidInputError(
            f"each feature must be a list of numbers (one per row); not a list: {kinds}"
        )
    n_rows = len(cols[0])
    if len(set(map(len, cols))) != 1:
        lengths = ", ".join(f"{echo(n)}={len(c)}"
                            for n, c in zip(feature_names, cols, strict=True))
        if any(len(c) == 0 for c in cols):
            empty = [n for n, c in zip(feature_names, cols, strict=True) if not c]
            raise InvalidInputError(
                f"empty columns for features: {name_list(empty)}; columns have unequal "
                f"lengths: {lengths}"
            )
        raise InvalidInputError(
            f"ragged input: columns have unequal lengths ({lengths}); every feature needs "
            f"one value per row"
        )
    if n_rows == 0:
        raise InvalidInputError("empty input: every feature column is an empty list (no rows)")
    if n_rows == 1:
        # One row (the engine's usual request, and every /predict/batch item): plain Python
        # checks cost a fraction of numpy's on 1-element columns. Anything unusual takes
        # the general path below, which names the offending features.
        vals = [c[0] for c in cols]
        try:
            # map() keeps the loops in C; the type check runs first (isfinite("x") raises),
            # the finiteness check before the bound (max() would skip a NaN)
            if (NUMERIC_TYPES.issuperset(map(type, vals)) and all(map(math.isfinite, vals))
                    and max(map(abs, vals)) <= FLOAT32_MAX):
                return np.array([vals], dtype=np.float64)
        except OverflowError:  # an int beyond float range
            pass
    bad = [n for n, c in zip(feature_names, cols, strict=True) if not NUMERIC_TYPES.issuperset(
        map(type, c))]
    if bad:
        raise InvalidInputError(f"non-numeric values in features: {name_list(bad)}")
    try:
        X = np.array(cols, dtype=np.float64).T
    except OverflowError:  # an integer beyond float range is as unusable as inf
        X = None
    return finite_or_raise(X, cols, feature_names)


def in_float32_range(X: np.ndarray) -> bool:
    """Every value finite and within float32 range (a NaN fails both comparisons)."""
    return X.size == 0 or bool(X.min() >= -FLOAT32_MAX and X.max() <= FLOAT32_MAX)


def finite_or_raise(
    X: np.ndarray | None, cols: Sequence[Sequence[Any]], feature_names: Sequence[str]
) -> np.ndarray:
    """Check a (rows, features) matrix against the value rule (module docstring), naming
    the columns that break it: NaN/inf (and integers beyond float64), then values beyond
    float32."""
    if X is not None and in_float32_range(X):
        return np.ascontiguousarray(X)
    non_finite, too_large = [], []
    for j, name in enumerate(feature_names):
        try:
            col = np.asarray(cols[j], dtype=np.float64)
        except OverflowError:
            non_finite.append(name)
            continue
        if not np.isfinite(col).all():
            non_finite.append(name)
        elif not in_float32_range(col):
            too_large.append(name)
    parts = []
    if non_finite:
        parts.append(f"NaN or infinite values in features: {name_list(non_finite)}")
    if too_large:
        parts.append(f"values beyond float32 range in features: {name_list(too_large)} "
                     f"({FLOAT32_RULE})")
    raise InvalidInputError("; ".join(parts) or "values outside the model's input range")
