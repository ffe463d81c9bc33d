"""The evaluator interface, the dispatcher and the agreement check."""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("serving_runtime.models.trees")

#: predictions as `predict_rows` returns them: a Python list or a numpy array (callers
#: convert with np.asarray)
RowPredictions = list[Any] | np.ndarray

# Agreement required between the fast path and the framework's own predict/predict_proba.
PROBA_ATOL = 1e-6
# Regression outputs can be large: compare relative to their magnitude (floor 1).
VALUE_RTOL = 1e-6


class Evaluator(ABC):
    """A compiled tree ensemble: same outputs as the reference runtime's `predict`.

    `predict(X)` takes a (rows, n_features) float array and returns
    (predictions[rows], probabilities[rows, n_classes] or None), exactly the contract of
    `serving_runtime.models.runtimes.base.ModelRuntime.predict`. `max_rows` is the batch size up
    to which it beats the framework's own vectorised call (callers use the reference
    beyond it: exactness is the same either way)."""

    name: str
    n_features: int
    is_classifier: bool
    max_rows: int = 256

    @abstractmethod
    def predict_rows(
        self, rows: list[list[float]]
    ) -> tuple[RowPredictions, np.ndarray | None]:
        """Rows as Python lists of float32-representable floats (see `as_rows`)."""

    def as_rows(self, X: np.ndarray) -> list[list[float]] | None:
        """float32-round the input exactly as both frameworks do; None if a value
        overflows float32 (then the framework's own error/semantics must decide)."""
        X32 = np.asarray(X, dtype=np.float32)
        if X32.ndim != 2 or X32.shape[1] != self.n_features:
            raise ValueError(f"expected (rows, {self.n_features}) input, got {X32.shape}")
        rows = X32.tolist()
        if len(rows) == 1:  # numpy's reduction costs more than a C-level map on one row
            return rows if all(map(math.isfinite, rows[0])) else None
        return rows if np.isfinite(X32).all() else None

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        rows = self.as_rows(X)
        if rows is None:
            raise OverflowError("input is not finite in float32")
        pred, proba = self.predict_rows(rows)
        return np.asarray(pred), (None if proba is None else np.asarray(proba, dtype=np.float64))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if not self.is_classifier:
            raise AttributeError("predict_proba is only defined for classifiers")
        proba = self.predict(X)[1]
        assert proba is not None
        return proba


@dataclass
class MismatchReport:
    """Result of comparing an evaluator with the reference on random rows."""

    n_rows: int
    label_mismatches: int = 0
    max_abs_diff: float = 0.0
    first_bad_row: int | None = None
    error: str | None = None
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.label_mismatches == 0 and self.first_bad_row is None

    def __str__(self) -> str:
        if self.ok:
            return f"agrees on {self.n_rows} rows (max |diff| {self.max_abs_diff:.3g})"
        if self.error:
            return f"failed on the sample: {self.error}"
        return (f"{self.label_mismatches} of {self.n_rows} labels differ, max |diff| "
                f"{self.max_abs_diff:.3g}, first bad row {self.first_bad_row}")


def sample_rows(n_features: int, n_rows: int, seed: int,
                scale: np.ndarray | None = None, center: np.ndarray | None = None) -> np.ndarray:
    """Random rows spread around the region the trees split on (uniform, plus a few
    exact thresholds so that `<=` versus `<` is exercised)."""
    rng = np.random.default_rng(seed)
    c = np.zeros(n_features) if center is None else center
    s = np.ones(n_features) if scale is None else scale
    return c + s * rng.uniform(-1.5, 1.5, size=(n_rows, n_features))


def verify(evaluator: Evaluator,
           reference: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]],
           n_rows: int = 1000, seed: int = 0, X: np.ndarray | None = None) -> MismatchReport:
    """Compare `evaluator.predict` with `reference(X) -> (pred, proba|None)` (e.g. a
    ModelRuntime's bound `predict`) on `X` or on `n_rows` random rows."""
    t0 = time.perf_counter()
    if X is None:
        X = sample_rows(evaluator.n_features, n_rows, seed,
                        getattr(evaluator, "feature_scale", None),
                        getattr(evaluator, "feature_center", None))
    report = MismatchReport(n_rows=len(X))
    try:
        ref_pred, ref_proba = reference(X)
        # in small chunks too: the fast path is used one request at a time
        got_pred, got_proba = evaluator.predict(X)
        one_pred, _ = evaluator.predict(X[:1])
    except Exception as exc:  # any failure means "do not trust the fast path"
        report.error = f"{type(exc).__name__}: {exc}"
        report.seconds = time.perf_counter() - t0
        return report
    ref_pred = np.asarray(ref_pred)
    got_pred = np.asarray(got_pred)
    bad_rows: np.ndarray
    if evaluator.is_classifier:
        label_bad = ref_pred != got_pred
        report.label_mismatches = int(label_bad.sum())
        bad_rows = label_bad
        if ref_proba is not None:
            if got_proba is None or got_proba.shape != np.shape(ref_proba):
                report.error = "probability output shape differs from the reference"
                return report
            diff = np.abs(np.asarray(ref_proba, dtype=np.float64) - got_proba).max(axis=1)
            report.max_abs_diff = float(diff.max())
            bad_rows = bad_rows | (diff > PROBA_ATOL)
    else:
        ref_v = ref_pred.astype(np.float64)
        diff = np.abs(ref_v - got_pred.astype(np.float64))
        report.max_abs_diff = float(diff.max())
        bad_rows = diff > VALUE_RTOL * np.maximum(1.0, np.abs(ref_v))
    if np.asarray(one_pred)[0] != got_pred[0]:
        bad_rows[0] = True
    if bad_rows.any():
        report.first_bad_row = int(np.argmax(bad_rows))
    report.seconds = time.perf_counter() - t0
    return report
