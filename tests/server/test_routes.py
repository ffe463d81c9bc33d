"""The route table (serving_runtime/server/routes.py) is what both the FastAPI app and
the hot-path layer serve: no route exists in one and not the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serving_runtime.server.app import create_app
from serving_runtime.server.routes import HOT_ROUTES, ROUTES, Route, match_hot
from serving_runtime.server.settings import Settings
from tests.server.test_fallback import _call, served  # noqa: F401  (fixture)

SAMPLE = {"name": "m", "model_name": "m", "version": "1"}


def _concrete(route: Route) -> str:
    return route.path.format(**{p: SAMPLE[p] for p in route.params})


def test_the_openapi_document_lists_exactly_the_table(tmp_path: Path) -> None:
    app = create_app(Settings(models_dir=tmp_path))
    documented = {(path, method.upper()) for path, item in app.openapi()["paths"].items()
                  for method in item}
    assert documented == {(r.path, r.method) for r in ROUTES}
    for route in ROUTES:
        op = app.openapi()["paths"][route.path][route.method.lower()]
        for code in route.responses:
            assert str(code) in op["responses"], (route.path, code)
        params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert params == set(route.params), route.path


def test_hot_matching_follows_the_table() -> None:
    for route in ROUTES:
        found = match_hot(route.method, _concrete(route))
        if route.hot:
            assert found is not None and found[0] is route
            assert found[1] == {p: SAMPLE[p] for p in route.params}
        else:
            assert found is None, route.path
    # a parameter is one non-empty segment; other methods never take the hot path
    for path in ("/v2/models//infer", "/v2/models/a/b/infer", "/predict/", "/predictx"):
        assert match_hot("POST", path) is None, path
    assert match_hot("GET", "/predict") is None


@pytest.mark.parametrize("route", HOT_ROUTES, ids=lambda r: r.path)
def test_every_hot_route_reaches_its_handler_both_ways(served: Any, route: Route) -> None:  # noqa: F811
    from serving_runtime.server.hot_path import HotPathApp

    app, calls = served
    path = _concrete(route)
    for through in (HotPathApp(app), app):
        calls.clear()
        _call(through, path, body={})  # the body is refused; the route is what counts
        params = tuple(SAMPLE[p] for p in route.params)
        assert calls == [(route.handler, (None, *params))], (path, type(through).__name__)
