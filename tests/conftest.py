"""Shared by every test directory."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

# start_server, zoo, zoo_server: for every test directory that needs a real server.
pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(autouse=True)
def _unfreeze_heap() -> Iterator[None]:
    """An in-process model load freezes the heap (serving_runtime/server/heap.py), as the server
    wants; the next test should start with the collector seeing everything again."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
