"""The runtime tests' `zoo` and `zoo_server` (tests/support/fixtures.py) for tests/battery:
tests/battery/conftest.py imports them, so every battery module can ask for them.

Their fixture functions (tests.support.fixtures) build the same real model folders (six
models: sklearn/XGBoost, binary/multi-class/regression) and the same real server. Every
battery module that imports these fixtures shares one zoo and one server per session
(each module gets its own fixture definition from pytest, so the instances are kept here),
which keeps the battery's start-up cost paid once; N1V1_BATTERY_URL points the battery at
a server someone else started instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import fixtures as _runtime

_shared: dict[str, Any] = {"users": 0}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tests/support's zoo (its fixture function, `__wrapped__` by pytest), built once."""
    if "zoo" not in _shared:
        _shared["zoo"] = _runtime.zoo.__wrapped__(tmp_path_factory)
    return _shared["zoo"]


class ExternalServer:
    """A runtime someone else started (N1V1_BATTERY_URL): the battery's requests go there.
    It must serve the zoo's model folders (same names and features), e.g. to compare two
    builds of the runtime with the same battery."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture(scope="session")
def zoo_server(zoo: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """tests/support's zoo_server (a real `python -m serving_runtime`), started once and
    stopped after the last battery module using it; or, with N1V1_BATTERY_URL set, that
    already running server."""
    external = os.environ.get("N1V1_BATTERY_URL")
    if external:
        srv = ExternalServer(external)
        yield srv
        srv.client.close()
        return
    if "server" not in _shared:
        gen = _runtime.zoo_server.__wrapped__(zoo, tmp_path_factory)
        _shared["server"] = (gen, next(gen))
    _shared["users"] += 1
    try:
        yield _shared["server"][1]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared.pop("server")[0].close()  # the fixture's own `finally` stops it


#: model names in the zoo, and the number of features of each (make_classification /
#: make_regression in the zoo fixture); feature names are f0..f{n-1}
ZOO_FEATURES = {"sk-binary": 6, "sk-multi": 6, "sk-reg": 5,
                "xgb-binary": 6, "xgb-multi": 6, "xgb-reg": 5}
CLASSIFIERS = ("sk-binary", "sk-multi", "xgb-binary", "xgb-multi")

#: the documented X-Correlation-ID rule (docs/contracts.md, "Errors and validation")
CORRELATION_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# the largest finite float32: the bound on every feature value (docs/contracts.md)
F32_MAX = 3.4028234663852886e38


def is_v2_path(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_shape_problem(path: str, status: int, headers: Any, raw: bytes) -> str | None:
    """None if an error response has the documented shape, else what is wrong with it:
    JSON, `{"detail": str, "correlation_id": str}` on the native routes, `{"error": str}`
    on /v2, and a valid X-Correlation-ID header in both cases."""
    import json

    ctype = headers.get("content-type", "")
    if not ctype.startswith("application/json"):
        return f"content-type {ctype!r}, body {raw[:120]!r}"
    try:
        doc = json.loads(raw)
    except ValueError:
        return f"not JSON: {raw[:120]!r}"
    cid = headers.get("x-correlation-id")
    if cid is None or not CORRELATION_ID_RE.fullmatch(cid):
        return f"X-Correlation-ID header missing or invalid: {cid!r}"
    if is_v2_path(path):
        if not (type(doc) is dict and set(doc) == {"error"} and type(doc["error"]) is str
                and doc["error"]):
            return f"V2 error body is not {{'error': str}}: {str(doc)[:200]}"
        return None
    if path.startswith("/health"):  # a 503 here is the health document itself
        return None
    if not (type(doc) is dict and set(doc) == {"detail", "correlation_id"}
            and type(doc["detail"]) is str and doc["detail"]
            and type(doc["correlation_id"]) is str):
        return f"native error body is not {{detail, correlation_id}}: {str(doc)[:200]}"
    if doc["correlation_id"] != cid:
        return f"body correlation_id {doc['correlation_id']!r} != header {cid!r}"
    return None
