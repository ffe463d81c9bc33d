"""Shared by every test directory."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

# In-process apps and the servers tests start serve no gRPC unless a test asks for a port:
# the default 8081 would be shared by every test's server.
os.environ.setdefault("GRPC_PORT", "0")

# start_server, zoo, zoo_server: for every test directory that needs a real server.
pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(autouse=True)
def _unfreeze_heap() -> Iterator[None]:
    """An in-process model load freezes the heap (serving_runtime/server/heap.py), as the server
    wants; the next test should start with the collector seeing everything again."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
