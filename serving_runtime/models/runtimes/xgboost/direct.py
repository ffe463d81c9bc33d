"""`Booster.inplace_predict` for numpy input, minus the Python wrapper's per-call work.

The wrapper re-imports its data modules, checks for pandas/arrow/polars/cuDF, rebuilds the
JSON configuration and copies the output through two helper layers on every call: measured
here, 191 us for 64 XGB-100 rows, of which the C call (`XGBoosterPredictFromDense`, part of
XGBoost's public C API) is 90 us. This module makes that same C call with the configuration
built once. It uses the C library handle the xgboost package loaded (`xgboost.core._LIB`,
not a public Python name), so `direct_predictor()` only returns a predictor after checking,
on random rows, that it gives bit-for-bit what `inplace_predict` gives; anything else (an
import that moved, a different answer, an error) means None and the public call is used.
"""

from __future__ import annotations

import ctypes
import json
import logging
from typing import Any

import numpy as np
import orjson

log = logging.getLogger("serving_runtime.models.runtimes")

_DTYPES = {np.dtype(np.float32): "<f4", np.dtype(np.float64): "<f8"}


def _c_library() -> Any:
    """The C library the xgboost package loaded (see the module docstring)."""
    from xgboost.core import _LIB

    return _LIB


class DirectDensePredictor:
    """`predictor(X)` == `booster.inplace_predict(X, iteration_range=..., validate_features=
    False)` for a C-contiguous float32/float64 matrix; None for any other input (the caller
    then uses the public call)."""

    def __init__(self, booster: Any, iteration_range: tuple[int, int]) -> None:
        self._lib = _c_library()
        self._predict = self._lib.XGBoosterPredictFromDense
        self._booster = booster  # keeps the handle alive
        self._handle = booster.handle
        self._config = json.dumps({
            "type": 0, "training": False, "iteration_begin": int(iteration_range[0]),
            "iteration_end": int(iteration_range[1]), "missing": float("nan"),
            "strict_shape": False, "cache_id": 0,
        }).encode()

    def __call__(self, X: np.ndarray) -> np.ndarray | None:
        typestr = _DTYPES.get(X.dtype)
        if typestr is None or X.ndim != 2 or not X.flags.c_contiguous:
            return None
        interface = orjson.dumps({"data": [X.ctypes.data, not X.flags.writeable],
                                  "shape": list(X.shape),
                                  "strides": None, "typestr": typestr, "version": 3})
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        out = ctypes.POINTER(ctypes.c_float)()
        ret = self._predict(self._handle, interface, self._config, None, ctypes.byref(shape),
                            ctypes.byref(dims), ctypes.byref(out))
        if ret != 0:
            raise RuntimeError(self._lib.XGBGetLastError().decode(errors="replace"))
        dims_n = dims.value
        out_shape = tuple(int(shape[i]) for i in range(dims_n))
        size = 1
        for d in out_shape:
            size *= d
        # the buffer is XGBoost's per-thread entry for this booster, overwritten by this
        # thread's next call: copy it out
        flat = np.ctypeslib.as_array(out, shape=(size,)).copy()
        return flat.reshape(out_shape)


def direct_predictor(booster: Any, iteration_range: tuple[int, int],
                     n_features: int) -> DirectDensePredictor | None:
    """A checked DirectDensePredictor for `booster`, or None (use `inplace_predict`)."""
    try:
        pred = DirectDensePredictor(booster, iteration_range)
        rng = np.random.default_rng(0)
        for rows in (1, 7, 300):
            for dtype in (np.float64, np.float32):
                X = rng.normal(0, 3, size=(rows, n_features)).astype(dtype)
                X[rng.random(X.shape) < 0.05] = np.nan  # missing values take the default branch
                want = np.asarray(booster.inplace_predict(
                    X, iteration_range=iteration_range, validate_features=False))
                got = pred(X)
                if got is None or got.shape != want.shape or not np.array_equal(
                        got, want, equal_nan=True):
                    log.info("direct XGBoost predict disagrees with inplace_predict; using "
                             "the public call")
                    return None
        return pred
    except Exception as exc:  # an xgboost version without these internals
        log.info("direct XGBoost predict unavailable; using the public call",
                 extra={"error": f"{type(exc).__name__}: {exc}"})
        return None
