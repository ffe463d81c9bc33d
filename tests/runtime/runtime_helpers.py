"""Helpers shared by the runtime tests (imported as a plain module; fixtures live in
conftest.py)."""

from __future__ import annotations

import numpy as np


def columns(X: np.ndarray, names: list[str] | None = None) -> dict[str, list[float]]:
    """A (rows, features) matrix as the /predict `features` object (columns by name)."""
    names = names or [f"f{i}" for i in range(X.shape[1])]
    return {n: X[:, i].tolist() for i, n in enumerate(names)}
