"""The reliability battery: hostile inputs, hostile files, slow and many clients, shutdown.

Each test prints its figures (inputs tried, 5xx seen, code executions, accepted/failed).
By default every part is bounded to keep `make test` a few minutes; N1V1_SOAK=1 runs the
longer soak (more examples, more connections, longer loads).
"""

from __future__ import annotations

import os

import pytest

# The runtime tests' zoo and real server, shared by every battery module that asks for them
# (instances kept in battery_zoo: one zoo and one server per session).
from tests.battery.battery_zoo import zoo, zoo_server  # noqa: F401 (fixtures)


def soak_enabled() -> bool:
    return os.environ.get("N1V1_SOAK", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def soak() -> bool:
    """True under N1V1_SOAK=1: scale the battery's counts and durations up."""
    return soak_enabled()
