"""Load-time self-check of the fast path, fallback to the reference path (logged and
metered), and the hot-path ASGI layer's routing and load shedding.

Disagreement is forced deliberately: the evaluator is compiled from a *different* forest
than the one being served (by patching the compiler the loader calls)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from serving_runtime import save_model
from serving_runtime.models.folder import load_model
from serving_runtime.models.runtimes.sklearn.runtime import SklearnRuntime
from serving_runtime.models.runtimes.sklearn.trees import compile_sklearn
from serving_runtime.models.runtimes.xgboost.runtime import XGBoostRuntime
from serving_runtime.models.trees.accelerate import AcceleratedRuntime, accelerate
from serving_runtime.server.app import create_app
from serving_runtime.server.hot_path import HotPathApp
from serving_runtime.server.metrics import RuntimeMetrics
from serving_runtime.server.registry import ModelRegistry
from serving_runtime.server.settings import Settings

X, Y = make_classification(n_samples=600, n_features=6, random_state=0)


def _forest(seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=8, random_state=seed).fit(X, Y)


@pytest.fixture
def wrong_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every compiled evaluator now comes from another forest: it must never be trusted."""
    impostor = compile_sklearn(_forest(99))

    def fake_compile(runtime: Any) -> Any:
        return impostor

    monkeypatch.setattr(SklearnRuntime, "compile_fast_path", fake_compile)


def test_agreeing_evaluator_is_used_and_answers_like_the_framework() -> None:
    model = _forest(0)
    runtime, status = accelerate(SklearnRuntime(model), model_name="m")
    assert status.state == "active" and isinstance(runtime, AcceleratedRuntime)
    pred, proba = runtime.predict(X[:50])
    np.testing.assert_array_equal(pred, model.predict(X[:50]))
    np.testing.assert_allclose(proba, model.predict_proba(X[:50]), atol=1e-12)


def test_disagreeing_evaluator_falls_back_and_logs(wrong_evaluator: None,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    reference = SklearnRuntime(_forest(0))
    with caplog.at_level(logging.WARNING, logger="serving_runtime.models.trees"):
        runtime, status = accelerate(reference, model_name="my-model")
    assert runtime is reference
    assert status.state == "fallback" and not status.active
    assert "differ" in status.detail or "diff" in status.detail
    msgs = [r for r in caplog.records if "disagrees" in r.getMessage()]
    assert msgs and msgs[0].model_name == "my-model"  # type: ignore[attr-defined]


def test_unsupported_model_keeps_the_reference_path() -> None:
    reference = SklearnRuntime(LogisticRegression().fit(X, Y))
    runtime, status = accelerate(reference, model_name="lr")
    assert runtime is reference and status.state == "unsupported"


def test_large_requests_go_to_the_framework() -> None:
    calls: list[int] = []
    reference = XGBoostRuntime(xgb.XGBClassifier(n_estimators=30).fit(X, Y).get_booster())
    runtime, status = accelerate(reference, model_name="x")
    assert status.active
    assert isinstance(runtime, AcceleratedRuntime)
    original = reference.predict

    def spy(data: np.ndarray) -> Any:
        calls.append(len(data))
        return original(data)

    reference.predict = spy  # type: ignore[method-assign]
    big = runtime.evaluator.max_rows + 1
    runtime.predict(X[:2])
    assert calls == []
    runtime.predict(X[:big])
    assert calls == [big]


def test_loader_records_the_fallback_and_still_answers_right(tmp_path: Path,
                                                             wrong_evaluator: None) -> None:
    model = _forest(0)
    save_model(model, tmp_path / "m", version="1")
    loaded = load_model(tmp_path / "m")
    assert loaded.fast_path is not None and loaded.fast_path.state == "fallback"
    pred, proba = loaded.predict(X[:40])
    np.testing.assert_array_equal(pred, model.predict(X[:40]))
    np.testing.assert_allclose(proba, model.predict_proba(X[:40]), atol=1e-12)


def _gauge(metrics: RuntimeMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value("model_fast_path", {"model_name": name})


def test_registry_meters_fast_path_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_model(_forest(0), tmp_path / "good", version="1")
    save_model(_forest(1), tmp_path / "bad", version="1")
    real_compile = SklearnRuntime.compile_fast_path
    impostor = compile_sklearn(_forest(99))

    def compile_for(runtime: Any) -> Any:
        # only "bad" (its forest has random_state=1) gets the impostor
        return impostor if runtime.estimator.random_state == 1 else real_compile(runtime)

    monkeypatch.setattr(SklearnRuntime, "compile_fast_path", compile_for)
    metrics = RuntimeMetrics()
    registry = ModelRegistry(Settings(models_dir=tmp_path), metrics)

    async def load() -> None:
        assert await registry.reload("good")
        assert await registry.reload("bad")

    asyncio.run(load())
    assert _gauge(metrics, "good") == 1.0
    assert _gauge(metrics, "bad") == 0.0
    assert registry.get("bad").fast_path.state == "fallback"


# --- hot-path ASGI layer -------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> tuple[Any, list[tuple[str, tuple[Any, ...]]]]:
    """A real runtime app serving one forest, models loaded; the HotHandlers methods are
    wrapped so a test can see which requests reached them (and with what)."""


    save_model(_forest(0), tmp_path / "m", version="1", sample=X[:3])
    app = create_app(Settings(models_dir=tmp_path))
    asyncio.run(app.state.registry.load_expected())
    calls: list[tuple[str, tuple[Any, ...]]] = []
    hot = app.state.hot

    def spy(name: str) -> Any:
        real = getattr(hot, name)

        async def call(*args: Any, **params: Any) -> Any:
            # (header correlation id, [path parameters: model name, version]); the
            # X-Model-Version pin is passed to every hot handler (None without the header)
            assert "pin" in params
            calls.append((name, args[1:] + tuple(v for k, v in params.items() if k != "pin")))
            return await real(*args, **params)
        return call

    from serving_runtime.server.routes import HOT_ROUTES

    for name in {route.handler for route in HOT_ROUTES}:
        setattr(hot, name, spy(name))
    return app, calls


ROW = {f"f{i}": [float(v)] for i, v in enumerate(X[0])}


def _call(app: Any, path: str, method: str = "POST", body: Any = None,
          headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"",
          messages: list[dict[str, Any]] | None = None,
          ) -> tuple[int, dict[str, Any], Any]:
    """One request through `app` as uvicorn would send it: (status, headers, JSON body).
    `messages`: what `receive()` returns in turn (default: the whole body at once)."""
    import orjson

    sent: list[dict[str, Any]] = []
    raw = orjson.dumps(body) if body is not None else b""
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "headers": [(b"content-length", str(len(raw)).encode()), *(headers or [])],
             "query_string": query, "http_version": "1.1", "scheme": "http", "root_path": "",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 9)}
    inbox = list(messages or [{"type": "http.request", "body": raw, "more_body": False}])

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await app(scope, receive, send)
        if getattr(app, "_probe", None) is not None:
            app._probe.cancel()
            app._probe = None

    asyncio.run(run())
    body_bytes = b"".join(m.get("body", b"") for m in sent[1:])
    return (sent[0]["status"], dict(sent[0]["headers"]),
            orjson.loads(body_bytes) if body_bytes else None)


def test_hot_routes_reach_the_same_handlers_and_the_rest_passes_through(served: Any) -> None:
    fastapi_app, calls = served
    app = HotPathApp(fastapi_app)
    status, headers, doc = _call(app, "/predict", body={"model_name": "m", "features": ROW},
                                 headers=[(b"x-correlation-id", b"abc")])
    assert status == 200 and doc["prediction"] == _forest(0).predict(X[:1]).tolist()
    assert headers[b"x-correlation-id"] == b"abc" and doc["correlation_id"] == "abc"
    status, _, doc = _call(app, "/predict/batch",
                           body={"requests": [{"model_name": "m", "features": ROW}] * 2})
    assert status == 200 and len(doc) == 2
    v2 = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64",
                      "data": X[0].tolist()}]}
    status, _, doc = _call(app, "/v2/models/m/infer", body=v2)
    assert status == 200 and doc["model_name"] == "m"
    assert calls == [("predict", ("abc",)), ("predict_batch", (None,)),
                     ("v2_infer", (None, "m"))]
    # everything else is FastAPI's: the same app answers, through its router
    status, _, doc = _call(app, "/health", method="GET")
    assert status == 200 and doc["ready"] is True
    status, _, _ = _call(app, "/v2/models/a/b/infer", body=v2)  # not a model name
    assert status == 404
    assert len(calls) == 3
    # and the FastAPI routes themselves call the same handlers
    status, _, doc = _call(fastapi_app, "/predict", body={"model_name": "m", "features": ROW})
    assert status == 200 and calls[-1] == ("predict", (None,))


def test_hot_path_errors_and_body_limit_match_the_fastapi_routes(served: Any) -> None:
    fastapi_app, _ = served
    app = HotPathApp(fastapi_app)
    bodies: list[Any] = [{"model_name": "m", "features": {**ROW, "f9": [1.0]}},
                         {"model_name": "ghost", "features": ROW}, [1, 2],
                         {"model_name": "m", "features": ROW, "correlation_id": "a\nb"}]
    for body in bodies:
        hot = _call(app, "/predict", body=body)
        routed = _call(fastapi_app, "/predict", body=body)
        assert hot[0] == routed[0] and hot[0] in (404, 422)
        assert {k: v for k, v in hot[2].items() if k != "correlation_id"} == {
            k: v for k, v in routed[2].items() if k != "correlation_id"}
    app.max_body = 100
    status, _, doc = _call(app, "/predict", body={"model_name": "m", "features": ROW})
    assert status == 413 and "exceeds the limit of 100 bytes" in doc["detail"]
    small = create_app(Settings(models_dir=fastapi_app.state.settings.models_dir,
                                max_body_bytes=100))
    status, _, doc = _call(small, "/predict", body={"model_name": "m", "features": ROW})
    assert status == 413 and "exceeds the limit of 100 bytes" in doc["detail"]


def test_the_first_correlation_header_wins_on_both_paths(served: Any) -> None:
    fastapi_app, _ = served
    two = [(b"x-correlation-id", b"first"), (b"x-correlation-id", b"second")]
    for app in (HotPathApp(fastapi_app), fastapi_app):
        status, headers, doc = _call(app, "/predict", body={"model_name": "m", "features": ROW},
                                     headers=two)
        assert status == 200 and doc["correlation_id"] == "first"


def test_v2_version_comes_from_the_path_only(served: Any) -> None:
    """`?version=` is not part of the V2 protocol: both paths ignore it the same way."""
    fastapi_app, _ = served
    v2 = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64",
                      "data": X[0].tolist()}]}
    for app in (HotPathApp(fastapi_app), fastapi_app):
        assert _call(app, "/v2/models/m/infer", body=v2, query=b"version=9")[0] == 200
    assert _call(fastapi_app, "/v2/models/m/versions/9/infer", body=v2)[0] == 404
    assert _call(fastapi_app, "/v2/models/m/versions/1/infer", body=v2)[0] == 200


def test_a_client_gone_mid_body_is_a_client_error_not_a_500(served: Any,
                                                            caplog: Any) -> None:
    fastapi_app, _ = served
    metrics = fastapi_app.state.metrics.registry
    labels = {"model_name": "unknown", "status": "server_error"}
    client_labels = {"model_name": "unknown", "status": "client_error"}
    partial = [{"type": "http.request", "body": b'{"model_name": "m", ', "more_body": True},
               {"type": "http.disconnect"}]
    before = metrics.get_sample_value("inference_requests_total", client_labels) or 0.0
    with caplog.at_level(logging.ERROR):
        for app in (HotPathApp(fastapi_app), fastapi_app):
            status, _, doc = _call(app, "/predict", messages=list(partial))
            assert status == 400 and "disconnected" in doc["detail"]
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    assert (metrics.get_sample_value("inference_requests_total", labels) or 0.0) == 0.0
    assert metrics.get_sample_value("inference_requests_total", client_labels) == before + 2


def test_a_correlation_id_that_cannot_be_a_header_stays_in_the_body(served: Any) -> None:
    """V2 request ids are free text: one outside latin-1 must not break the response."""
    fastapi_app, _ = served
    v2 = {"id": "注文-1", "inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64",
                                     "data": X[0].tolist()}]}
    for app in (HotPathApp(fastapi_app), fastapi_app):
        status, headers, doc = _call(app, "/v2/models/m/infer", body=v2)
        assert status == 200 and doc["id"] == "注文-1"
        # not echoed in the header (outside the id rule): a generated id instead
        cid = headers[b"x-correlation-id"]
        assert re.fullmatch(rb"[0-9a-f]{32}", cid), cid


def test_overload_is_shed_with_503_and_retry_after(served: Any) -> None:
    fastapi_app, calls = served
    app = HotPathApp(fastapi_app, shed_lag_s=0.02)
    app.lag, app.recent_arrivals = 0.5, 100  # the loop is half a second behind, under load
    status, headers, doc = _call(app, "/predict", body={"model_name": "m", "features": ROW},
                                 headers=[(b"x-correlation-id", b"abc")])
    assert status == 503
    assert headers[b"retry-after"] == b"1"
    assert headers[b"x-correlation-id"] == b"abc"
    assert "overloaded" in doc["detail"] and doc["correlation_id"] == "abc"
    status, _, doc = _call(app, "/v2/models/m/infer", body={})
    assert status == 503 and "error" in doc
    assert calls == []


def test_a_late_loop_without_a_request_backlog_is_not_shed(served: Any) -> None:
    """One slow model (re)load or a busy neighbour process must not refuse requests."""
    fastapi_app, calls = served
    app = HotPathApp(fastapi_app, shed_lag_s=0.02)
    app.lag, app.recent_arrivals = 0.5, 1
    status, _, _ = _call(app, "/predict", body={"model_name": "m", "features": ROW})
    assert status == 200 and [c[0] for c in calls] == ["predict"]


def test_shedding_follows_the_settings_and_zero_turns_it_off(served: Any,
                                                             tmp_path: Path) -> None:

    from serving_runtime.server.hot_path import with_hot_path

    assert with_hot_path(create_app(Settings(models_dir=tmp_path))).shed_lag_s == 0.05
    assert with_hot_path(
        create_app(Settings(models_dir=tmp_path, shed_lag_ms=20))).shed_lag_s == 0.02
    fastapi_app, calls = served
    app = HotPathApp(fastapi_app, shed_lag_s=0.0)  # SHED_LAG_MS=0
    app.lag, app.recent_arrivals = 5.0, 1000
    status, _, _ = _call(app, "/predict", body={"model_name": "m", "features": ROW})
    assert status == 200 and [c[0] for c in calls] == ["predict"]


def test_fast_path_setting_off_serves_the_framework(tmp_path: Path) -> None:
    save_model(_forest(0), tmp_path / "m", version="1", sample=X[:3])
    on = load_model(tmp_path / "m", fast_path=True)
    off = load_model(tmp_path / "m", fast_path=False)
    assert on.fast_path is not None and on.fast_path.state == "active"
    assert off.fast_path is not None and off.fast_path.state == "disabled"
    assert not isinstance(off.runtime, AcceleratedRuntime)
    registry = ModelRegistry(Settings(models_dir=tmp_path, fast_path=False), RuntimeMetrics())
    assert asyncio.run(registry.reload("m"))
    assert registry.models["m"].fast_path.state == "disabled"
    assert registry.metrics.registry.get_sample_value("model_fast_path", {"model_name": "m"}) == 0


def test_values_beyond_float32_take_the_framework_path() -> None:
    """The evaluator works on float32-rounded input; a value that overflows float32 must
    get whatever the framework itself answers, not a compiled guess."""
    booster = xgb.XGBClassifier(n_estimators=20).fit(X, Y).get_booster()
    reference = XGBoostRuntime(booster)
    runtime, status = accelerate(reference, model_name="x")
    assert status.active
    row = X[:1].copy()
    row[0, 0] = 1e39  # finite in float64, inf in float32
    calls: list[int] = []
    original = reference.predict

    def spy(data: np.ndarray) -> Any:
        calls.append(len(data))
        return original(data)

    reference.predict = spy  # type: ignore[method-assign]
    pred, proba = runtime.predict(row)
    assert calls == [1]
    np.testing.assert_array_equal(proba, original(row)[1])
