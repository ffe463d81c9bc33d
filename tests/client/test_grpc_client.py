"""The engine's client over gRPC (`REMOTE_INFERENCE_URL=grpc://host:port`): the same results
as local mode and REST, the same exception types for the same bad input, retries on an
unreachable server, and REST-only calls refused by name. Remote side: a real runtime
process on loopback with GRPC_PORT set."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving_runtime.client import (
    AsyncInferenceClient,
    ClientSettings,
    InferenceClient,
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
)
from tests.client.test_parity import BAD_INPUTS, MAX_BODY
from tests.support.client_support import columns, make_models
from tests.support.runtime_helpers import RuntimeServer, free_port

MODELS = ["sk-iris-rf", "sk-cancer-lr", "sk-diabetes-gbr", "xgb-iris", "xgb-diabetes"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("grpc-client-models")
    return root, make_models(root)


@pytest.fixture(scope="module")
def runtime(models, tmp_path_factory) -> Iterator[RuntimeServer]:
    srv = RuntimeServer(models[0], grpc=True, args=["--max-body-bytes", str(MAX_BODY)],
                        log_path=tmp_path_factory.mktemp("log") / "runtime.log")
    srv.grpc_url = f"grpc://{srv.grpc_address}"  # type: ignore[attr-defined]
    try:
        srv.wait_ready(120)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def clients(models, runtime) -> Iterator[tuple[InferenceClient, InferenceClient, InferenceClient]]:
    settings = ClientSettings(max_body_bytes=MAX_BODY)
    local = InferenceClient(settings, remote=False, models_dir=models[0])
    rest = InferenceClient(settings, remote=True, url=runtime.url, timeout=30)
    grpc = InferenceClient(settings, remote=True, url=runtime.grpc_url, timeout=30)
    yield local, rest, grpc
    rest.close()
    grpc.close()


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        if key != "latency_ms":
            assert a[key] == b[key], key
    assert b["latency_ms"] > 0


@pytest.mark.parametrize("name", MODELS)
def test_grpc_equals_local_and_rest(models, clients, name):
    names, X = models[1][name]
    local, rest, grpc = clients
    body = columns(names, X[::4][:40])
    want = local.predict(name, body, correlation_id=f"g-{name}")
    _same(want, grpc.predict(name, body, correlation_id=f"g-{name}"))
    _same(rest.predict(name, body, correlation_id=f"g-{name}"),
          grpc.predict(name, body, correlation_id=f"g-{name}"))
    if "diabetes" not in name:
        assert want["probabilities"] is not None  # the classifier path was exercised


def test_numpy_columns_in_any_order_and_batches(models, clients):
    local, _, grpc = clients
    names, X = models[1]["xgb-iris"]
    body = {n: X[:7, i] for i, n in reversed(list(enumerate(names)))}
    _same(local.predict("xgb-iris", body, "np"), grpc.predict("xgb-iris", body, "np"))
    reqs = [{"model_name": m, "features": columns(models[1][m][0], models[1][m][1][:3])}
            for m in ("sk-iris-rf", "xgb-diabetes", "sk-cancer-lr")]
    reqs[1]["correlation_id"] = "own-id"
    a = local.predict_batch(reqs, correlation_id="b-1")
    b = grpc.predict_batch(reqs, correlation_id="b-1")
    for x, y in zip(a, b, strict=True):
        _same(x, y)
    assert [r["correlation_id"] for r in b] == ["b-1-0", "own-id", "b-1-2"]


@pytest.mark.parametrize(("label", "model", "features", "exc_type", "needle"), BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_the_local_exception_type(clients, label, model, features, exc_type,
                                                   needle):
    """The type (and status) is local mode's; the words are the V2 path's, naming the same
    feature or model where local mode names one."""
    local, _, grpc = clients
    with pytest.raises(exc_type) as info:
        grpc.predict(model, features, correlation_id="err-1")
    got = info.value
    assert type(got) is exc_type and got.status_code == exc_type.status_code
    named = re.findall(r"(sepal_\w+|petal_\w+|colour|no-such-model|\.\./etc)", needle)
    for word in named:
        assert word in got.message, (label, got.message)
    assert got.correlation_id == "err-1"


def test_rest_only_calls_say_so(clients):
    grpc = clients[2]
    for call in (grpc.health, lambda: grpc.reload("sk-iris-rf")):
        with pytest.raises(ServerError, match=r"REST call; this client speaks gRPC"):
            call()


def test_unreachable_server_is_retried_then_unavailable():
    url = f"grpc://127.0.0.1:{free_port()}"  # nobody listens
    client = InferenceClient(remote=True, url=url, timeout=5,
                             retry=RetryPolicy(retries=2, backoff=0.01))
    with pytest.raises(ServiceUnavailableError) as info:
        client.predict("m", {"a": [1.0]}, correlation_id="down-1")
    assert url in info.value.message and info.value.correlation_id == "down-1"
    client.close()


def test_settings_choose_grpc_and_bad_urls_are_named(runtime, models, monkeypatch):
    monkeypatch.setenv("REMOTE_INFERENCE_ENABLED", "true")
    monkeypatch.setenv("REMOTE_INFERENCE_URL", runtime.grpc_url)
    client = InferenceClient()
    names, X = models[1]["sk-iris-rf"]
    assert len(client.predict("sk-iris-rf", columns(names, X[:2]))["prediction"]) == 2
    client.close()
    with pytest.raises(ValueError, match="grpc://host:port"):
        InferenceClient(remote=True, url="grpc://host:1/path")


def test_async_grpc_equals_sync(models, runtime, clients):
    local = clients[0]
    names, X = models[1]["sk-cancer-lr"]
    body = columns(names, X[:12])

    async def go() -> tuple[dict, list]:
        async with AsyncInferenceClient(remote=True, url=runtime.grpc_url) as client:
            one = await client.predict("sk-cancer-lr", body, "a-1")
            many = await client.predict_batch(
                [{"model_name": "sk-cancer-lr", "features": body}] * 5, correlation_id="ab")
            return one, many

    one, many = asyncio.run(go())
    want = local.predict("sk-cancer-lr", body, "a-1")
    _same(want, one)
    assert [m["correlation_id"] for m in many] == [f"ab-{i}" for i in range(5)]
    assert all(m["prediction"] == want["prediction"] for m in many)
    assert np.allclose(many[0]["confidence"], want["confidence"])
