"""Code-running payloads for tests/battery/test_battery_model_files.py.

A separate module so that the processes the battery starts (a loader child, a real
server) can import the classes a hostile skops file names (PYTHONPATH points here): if a
loader ever trusted such a file, the payload would really run and leave its marker file.
"""

from __future__ import annotations

import os
from typing import Any


def marker_code(marker: str) -> str:
    """Python source that leaves the marker: what each payload runs."""
    return f"open({marker!r}, 'w').write('pwned')"


class ExecOnUnpickle:
    """Unpickling this calls exec(code): the classic hostile pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (marker_code(self.marker),))


class SystemOnUnpickle:
    """Unpickling this calls os.system("touch <marker>")."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class WritesMarkerOnSetState:
    """skops builds this with __new__ and then calls __setstate__: the write happens at
    load time, if the loader trusts the type."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __getstate__(self) -> dict[str, Any]:
        return {"marker": self.marker}

    def __setstate__(self, state: dict[str, Any]) -> None:
        with open(state["marker"], "w") as fh:
            fh.write("pwned")
        self.marker = state["marker"]
