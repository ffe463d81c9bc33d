"""Load-time self-check of the fast path, fallback to the reference path (logged and
metered), and the hot-path ASGI layer's routing and load shedding.

Disagreement is forced deliberately: the evaluator is compiled from a *different* forest
than the one being served (by patching the compiler the loader calls)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

import serving_runtime.fastpath.accelerate as acc
from serving_runtime import save_model
from serving_runtime.fastpath import compile_evaluator
from serving_runtime.fastpath.accelerate import AcceleratedRuntime, accelerate
from serving_runtime.fastpath.asgi import HotPathApp
from serving_runtime.metrics import RuntimeMetrics
from serving_runtime.model_folder import load_model
from serving_runtime.registry import ModelRegistry
from serving_runtime.runtimes import SklearnRuntime, XGBoostRuntime
from serving_runtime.settings import Settings

X, Y = make_classification(n_samples=600, n_features=6, random_state=0)


def _forest(seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=8, random_state=seed).fit(X, Y)


@pytest.fixture
def wrong_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every compiled evaluator now comes from another forest: it must never be trusted."""
    impostor = compile_evaluator(_forest(99), "sklearn")

    def fake_compile(model: Any, framework: str, **_: Any) -> Any:
        return impostor

    monkeypatch.setattr(acc, "compile_evaluator", fake_compile)


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
    with caplog.at_level(logging.WARNING, logger="serving_runtime.fastpath"):
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
    real_compile = acc.compile_evaluator
    impostor = compile_evaluator(_forest(99), "sklearn")

    def compile_for(model: Any, framework: str, **kw: Any) -> Any:
        # only "bad" (its forest has random_state=1) gets the impostor
        return impostor if model.random_state == 1 else real_compile(model, framework, **kw)

    monkeypatch.setattr(acc, "compile_evaluator", compile_for)
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


class _FakeApp:
    """Stands in for the FastAPI app: routes with endpoints, records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.passed_through: list[str] = []

        class Route:
            def __init__(self, path: str, endpoint: Any) -> None:
                self.path, self.endpoint, self.methods = path, endpoint, {"POST"}

        def endpoint(label: str) -> Any:
            async def handler(request: Any, **kw: Any) -> Any:
                self.calls.append((label, kw))
                from starlette.responses import Response
                return Response(b"{}", media_type="application/json")
            return handler

        self.routes = [Route("/predict", endpoint("predict")),
                       Route("/predict/batch", endpoint("batch")),
                       Route("/v2/models/{name}/infer", endpoint("v2"))]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.passed_through.append(scope["path"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _call(app: Any, path: str, method: str = "POST",
          headers: list[tuple[bytes, bytes]] | None = None) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": method, "path": path, "headers": headers or [],
             "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await app(scope, receive, send)
        if app._probe is not None:
            app._probe.cancel()
            app._probe = None

    asyncio.run(run())
    return sent


def test_hot_routes_reach_the_same_endpoints_and_the_rest_passes_through() -> None:
    fake = _FakeApp()
    app = HotPathApp(fake)
    _call(app, "/predict")
    _call(app, "/predict/batch")
    _call(app, "/v2/models/my-model/infer")
    _call(app, "/health", method="GET")
    _call(app, "/v2/models/a/b/infer")  # not a model name: FastAPI decides (404)
    assert fake.calls == [("predict", {}), ("batch", {}), ("v2", {"name": "my-model"})]
    assert fake.passed_through == ["/health", "/v2/models/a/b/infer"]


def test_overload_is_shed_with_503_and_retry_after() -> None:
    fake = _FakeApp()
    app = HotPathApp(fake, shed_lag_s=0.02)
    app.lag, app.recent_arrivals = 0.5, 100  # the loop is half a second behind, under load
    sent = _call(app, "/predict", headers=[(b"x-correlation-id", b"abc")])
    start = sent[0]
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    assert headers[b"x-correlation-id"] == b"abc"
    import orjson
    doc = orjson.loads(sent[1]["body"])
    assert "overloaded" in doc["detail"] and doc["correlation_id"] == "abc"
    assert fake.calls == []
    v2 = _call(app, "/v2/models/m/infer")
    assert v2[0]["status"] == 503 and "error" in orjson.loads(v2[1]["body"])


def test_a_late_loop_without_a_request_backlog_is_not_shed() -> None:
    """One slow model (re)load or a busy neighbour process must not refuse requests."""
    fake = _FakeApp()
    app = HotPathApp(fake, shed_lag_s=0.02)
    app.lag, app.recent_arrivals = 0.5, 1
    sent = _call(app, "/predict")
    assert sent[0]["status"] == 200 and fake.calls == [("predict", {})]


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
