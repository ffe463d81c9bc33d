"""Helpers shared by the runtime tests (imported as a plain module; fixtures live in
conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def columns(X: np.ndarray, names: list[str] | None = None) -> dict[str, list[float]]:
    """A (rows, features) matrix as the /predict `features` object (columns by name)."""
    names = names or [f"f{i}" for i in range(X.shape[1])]
    return {n: X[:, i].tolist() for i, n in enumerate(names)}
