"""AsyncInferenceClient: same answers and errors as the blocking client, concurrent calls
over pooled connections, async retries and timeouts. Real runtime for results; the
scripted FaultServer (a fake) only for 503s and slowness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving_runtime.client import (
    AsyncInferenceClient,
    InferenceClient,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotFoundError,
    RetryPolicy,
    ServiceUnavailableError,
)
from tests.support.client_support import (
    IRIS_FEATURES,
    FaultServer,
    Reply,
    columns,
    make_models,
    predict_ok,
    run_runtime,
)

FAST = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.02, max_retry_after=0.1)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict]]:
    root = tmp_path_factory.mktemp("async-models")
    specs = make_models(root)
    log = tmp_path_factory.mktemp("async-log") / "runtime.log"
    with run_runtime(root, log) as rt:
        yield rt.url, root, specs


async def predict_all(client: AsyncInferenceClient, specs: dict) -> list[dict]:
    calls = []
    for name, (names, X) in sorted(specs.items()):
        for start in range(0, 40, 10):
            calls.append(client.predict(name, columns(names, X[start:start + 10]),
                                        correlation_id=f"{name}-{start}"))
    return await asyncio.gather(*calls)


def test_async_local_and_remote_agree_with_sync(live):
    url, root, specs = live

    async def run() -> tuple[list[dict], list[dict]]:
        async with AsyncInferenceClient(remote=True, url=url, timeout=10) as remote, \
                AsyncInferenceClient(remote=False, models_dir=root) as local:
            assert (remote.mode, local.mode) == ("remote", "local")
            return await predict_all(remote, specs), await predict_all(local, specs)

    remote_out, local_out = asyncio.run(run())
    sync = InferenceClient(remote=False, models_dir=root)
    expected = [sync.predict(name, columns(names, X[s:s + 10]), correlation_id=f"{name}-{s}")
                for name, (names, X) in sorted(specs.items()) for s in range(0, 40, 10)]
    assert len(remote_out) == len(local_out) == len(expected) == 20
    for r, lo, e in zip(remote_out, local_out, expected, strict=True):
        for key in ("prediction", "confidence", "probabilities", "correlation_id",
                    "model_version"):
            assert r[key] == lo[key] == e[key], key


def test_async_errors_match(live):
    url, root, _ = live
    row = {n: [1.0] for n in IRIS_FEATURES}

    async def errors(client: AsyncInferenceClient) -> list[tuple[type, str]]:
        out = []
        for model, features in (("nope", row), ("xgb-iris", {**row, "x": [1.0]})):
            try:
                await client.predict(model, features)
            except (ModelNotFoundError, InvalidInputError) as exc:
                out.append((type(exc), exc.message))
        await client.aclose()
        return out

    remote = asyncio.run(errors(AsyncInferenceClient(remote=True, url=url)))
    local = asyncio.run(errors(AsyncInferenceClient(remote=False, models_dir=root)))
    assert remote == local
    assert [t for t, _ in remote] == [ModelNotFoundError, InvalidInputError]


def test_async_batch_health_reload(live):
    url, root, specs = live
    names, X = specs["sk-iris-rf"]
    reqs = [{"model_name": "sk-iris-rf", "features": columns(names, X[:2])}] * 3

    async def run(client: AsyncInferenceClient) -> tuple:
        async with client:
            batch = await client.predict_batch(reqs, correlation_id="b")
            health = await client.health()
            reload = await client.reload("sk-iris-rf")
            return batch, health, reload

    for client in (AsyncInferenceClient(remote=True, url=url),
                   AsyncInferenceClient(remote=False, models_dir=root)):
        batch, health, reload = asyncio.run(run(client))
        assert [b["correlation_id"] for b in batch] == ["b-0", "b-1", "b-2"]
        assert health["models_loaded"] and "sk-iris-rf" in health["models_loaded"]
        assert reload == {"message": "Reloading model sk-iris-rf"}


def test_async_retry_on_503_then_success():
    script = [Reply(503, {"detail": "warming"}), Reply(200, predict_ok("a1"))]

    async def run(url: str) -> dict:
        async with AsyncInferenceClient(remote=True, url=url, retry=FAST) as client:
            return await client.predict("m", {"a": [1.0]}, correlation_id="a1")

    with FaultServer(script) as srv:
        got = asyncio.run(run(srv.url))
    assert got["correlation_id"] == "a1" and len(srv.seen) == 2
    assert {s.headers["X-Correlation-ID"] for s in srv.seen} == {"a1"}


def test_async_retries_bounded_and_timeout():
    async def call(url: str, timeout: float) -> None:
        async with AsyncInferenceClient(remote=True, url=url, retry=FAST,
                                        timeout=timeout) as client:
            await client.predict("m", {"a": [1.0]})

    with FaultServer([Reply(503, {"detail": "down"})]) as srv:
        with pytest.raises(ServiceUnavailableError, match="down"):
            asyncio.run(call(srv.url, 5))
        assert len(srv.seen) == FAST.attempts == 3

    with FaultServer([Reply(200, predict_ok(), delay=1.5)]) as srv:
        started = time.monotonic()
        with pytest.raises(InferenceTimeoutError):
            asyncio.run(call(srv.url, 0.3))
        assert time.monotonic() - started < 1.45  # answer comes after 1.5 s
        assert len(srv.seen) == 1


def test_async_concurrent_calls_share_a_small_pool():
    async def run(url: str) -> None:
        async with AsyncInferenceClient(remote=True, url=url, max_connections=4) as client:
            await asyncio.gather(*(client.predict("m", {"a": [1.0]}) for _ in range(40)))

    with FaultServer([Reply(200, predict_ok(), delay=0.01)]) as srv:
        asyncio.run(run(srv.url))
    assert len(srv.seen) == 40
    assert len({s.peer for s in srv.seen}) <= 4
