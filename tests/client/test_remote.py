"""Remote transport: retries (bounded, with backoff and a capped Retry-After), no retry
on 4xx, timeouts, keep-alive pooling, correlation-id headers, settings from the env.

Failures a healthy runtime never shows (503 on demand, dropped connections, a slow
answer) come from `FaultServer`, a scripted loopback HTTP server: a fake, used only
for those. Health, reload and pooling run against the real runtime."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from serving_runtime.client import (
    BadRequestError,
    ClientSettings,
    InferenceClient,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    PredictionError,
    RetryPolicy,
    ServerError,
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
from tests.support.runtime_helpers import free_port

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05, max_retry_after=0.2)
ROW = {n: [1.0] for n in IRIS_FEATURES}


def client_for(url: str, **kw: object) -> InferenceClient:
    kw.setdefault("retry", FAST)
    return InferenceClient(remote=True, url=url, timeout=kw.pop("timeout", 5), **kw)


@contextmanager
def scripted(script: list[Reply], **kw: object) -> Iterator[tuple[FaultServer, InferenceClient]]:
    with FaultServer(script) as srv, client_for(srv.url, **kw) as client:
        yield srv, client


# --- retries -------------------------------------------------------------------------


def test_503_is_retried_then_succeeds():
    script = [Reply(503, {"detail": "loading"}), Reply(503, {"detail": "loading"}),
              Reply(200, predict_ok("cid-7"))]
    with FaultServer(script) as srv, client_for(srv.url) as client:
        got = client.predict("m", ROW, correlation_id="cid-7")
    assert got["correlation_id"] == "cid-7"
    assert len(srv.seen) == 3
    # The same correlation id travels on every attempt, in the body and the header.
    for seen in srv.seen:
        assert seen.headers["X-Correlation-ID"] == "cid-7"
        assert json.loads(seen.body)["correlation_id"] == "cid-7"


def test_503_retries_are_bounded():
    with scripted([Reply(503, {"detail": "model still loading"})]) as (srv, client), \
            pytest.raises(ServiceUnavailableError, match="model still loading") as info:
        client.predict("m", ROW)
    assert len(srv.seen) == FAST.attempts == 4
    assert info.value.status_code == 503


def test_model_still_loading_is_retried_and_typed():
    from serving_runtime import errors as runtime_errors

    msg = "Model m is not ready yet (loading)"
    with scripted([Reply(503, {"detail": msg})]) as (srv, client), \
            pytest.raises(ModelNotReadyError) as info:
        client.predict("m", ROW)
    assert len(srv.seen) == FAST.attempts
    assert info.value.message == msg and info.value.model_name == "m"
    # Catchable as the runtime's own class and as the client's "unavailable".
    assert isinstance(info.value, runtime_errors.ModelNotReadyError)
    assert isinstance(info.value, ServiceUnavailableError)


def test_retry_after_is_honoured_and_capped():
    policy = RetryPolicy(retries=2, backoff=0.001, max_backoff=0.001, max_retry_after=0.4)
    with FaultServer([Reply(503, {"detail": "busy"}, {"Retry-After": "0.25"}),
                      Reply(503, {"detail": "busy"}, {"Retry-After": "3600"}),
                      Reply(200, predict_ok())]) as srv, \
            client_for(srv.url, retry=policy) as client:
        started = time.monotonic()
        client.predict("m", ROW)
        elapsed = time.monotonic() - started
    assert len(srv.seen) == 3
    # 0.25 s as asked, then the one-hour hint capped at 0.4 s.
    assert 0.6 <= elapsed < 2.5, elapsed


@pytest.mark.parametrize(("status", "exc_type"), [
    (400, BadRequestError), (404, ModelNotFoundError), (422, InvalidInputError),
    (500, PredictionError), (502, ServerError),
])
def test_no_retry_on_other_statuses(status, exc_type):
    with scripted([Reply(status, {"detail": f"told you {status}"})]) as (srv, client), \
            pytest.raises(exc_type, match=f"told you {status}") as info:
        client.predict("m", ROW)
    assert len(srv.seen) == 1
    assert info.value.status_code == status


def test_connection_refused_is_retried_then_unavailable():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    policy = RetryPolicy(retries=2, backoff=0.1, max_backoff=0.1)
    with client_for(url, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="after 3 attempts") as info:
            client.predict("m", ROW)
        elapsed = time.monotonic() - started
    assert url in info.value.message and "ConnectError" in info.value.message
    assert 0.1 <= elapsed < 5, "two backoff sleeps of 0.05-0.1 s, then give up"


def test_dropped_connections_are_retried():
    script = [Reply(drop=True), Reply(drop=True), Reply(200, predict_ok())]
    with FaultServer(script) as srv, client_for(srv.url) as client:
        assert client.predict("m", ROW)["prediction"] == [1]
    assert len(srv.seen) == 3


def test_timeout_is_not_retried():
    with FaultServer([Reply(200, predict_ok(), delay=1.5)]) as srv, \
            client_for(srv.url, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(InferenceTimeoutError, match="within 0.3s"):
            client.predict("m", ROW, correlation_id="slow-1")
        elapsed = time.monotonic() - started
    assert elapsed < 1.45, elapsed  # the fault server answers only after 1.5 s
    assert len(srv.seen) == 1


def test_connections_are_kept_alive():
    with FaultServer([Reply(200, predict_ok())]) as srv, client_for(srv.url) as client:
        for _ in range(20):
            client.predict("m", ROW)
    assert len(srv.seen) == 20
    assert len({s.peer for s in srv.seen}) == 1, "one pooled connection for 20 calls"


def test_url_path_prefix_is_kept():
    """REMOTE_INFERENCE_URL may point below a path (an ingress route per model)."""
    with FaultServer([Reply(200, predict_ok())]) as srv, \
            client_for(f"{srv.url}/models/iris/") as client:
        client.predict("m", ROW)
        client.reload("m")
    assert [s.path for s in srv.seen] == ["/models/iris/predict", "/models/iris/reload/m"]


def test_error_body_without_detail_still_gives_a_message():
    with scripted([Reply(422, {"error": "v2 style"})]) as (_, client), \
            pytest.raises(InvalidInputError, match="v2 style"):
        client.predict("m", ROW)


def test_retry_policy_delays():
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from serving_runtime.client.retry import parse_retry_after

    policy = RetryPolicy(retries=5, backoff=0.1, max_backoff=0.4, max_retry_after=2)
    for attempt, ceiling in ((0, 0.1), (1, 0.2), (2, 0.4), (4, 0.4)):
        d = policy.delay(attempt)
        assert ceiling / 2 <= d <= ceiling, (attempt, d)
    assert policy.delay(0, "1.5") == 1.5
    assert policy.delay(0, "120") == 2  # capped
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after(soon) <= 30
    with pytest.raises(ValueError, match="must not be negative"):
        RetryPolicy(retries=-1)


# --- settings --------------------------------------------------------------------------


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REMOTE_INFERENCE_ENABLED", "true")
    monkeypatch.setenv("REMOTE_INFERENCE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("REMOTE_INFERENCE_TIMEOUT", "2.5")
    settings = ClientSettings()
    assert settings.remote_inference_enabled is True
    assert settings.remote_inference_timeout == 2.5
    with InferenceClient() as client:
        assert client.mode == "remote" and client.url == "http://127.0.0.1:9/"
        assert client._remote is not None and client._remote.timeout == 2.5
    # Constructor arguments override the environment.
    with InferenceClient(remote=False, models_dir=tmp_path) as client:
        assert client.mode == "local"


def test_defaults_are_local_mode(monkeypatch):
    for var in ("REMOTE_INFERENCE_ENABLED", "REMOTE_INFERENCE_URL", "REMOTE_INFERENCE_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    settings = ClientSettings()
    assert settings.remote_inference_enabled is False
    assert settings.remote_inference_url == "http://localhost:8000"
    assert settings.remote_inference_timeout == 30
    assert InferenceClient().mode == "local"


def test_bad_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout must be positive"):
        InferenceClient(remote=True, timeout=0)


# --- health and reload against the real runtime -----------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict]]:
    root = tmp_path_factory.mktemp("reload-models")
    specs = make_models(root)
    log = tmp_path_factory.mktemp("reload-log") / "runtime.log"
    with run_runtime(root, log) as rt:
        yield rt.url, root, specs


def test_health_both_modes(live):
    url, root, _ = live
    with client_for(url) as remote:
        doc = remote.health()
    assert doc["status"] == "healthy" and doc["ready"] is True
    assert "sk-iris-rf" in doc["models_loaded"]
    local = InferenceClient(remote=False, models_dir=root)
    assert local.health()["status"] == "degraded"  # nothing used yet: never "ready" empty
    local.predict("xgb-iris", ROW)
    doc = local.health()
    assert doc["status"] == "healthy" and doc["models_loaded"] == ["xgb-iris"]


def test_reload_unknown_model_is_404_both_modes(live):
    url, root, _ = live
    for client in (client_for(url), InferenceClient(remote=False, models_dir=root)):
        with pytest.raises(ModelNotFoundError, match="Model nope not found"):
            client.reload("nope")


def test_hot_reload_both_modes(live, tmp_path):
    """Re-save a model folder with a new version; reload; both modes serve it."""
    import xgboost as xgb
    from sklearn.datasets import load_iris

    from serving_runtime import save_model

    url, root, specs = live
    names, X = specs["xgb-iris"]
    local = InferenceClient(remote=False, models_dir=root)
    remote = client_for(url)
    assert local.predict("xgb-iris", columns(names, X[:2]))["model_version"] == "1.0.0"

    staged = tmp_path / "xgb-iris"
    iris_X, iris_y = load_iris(return_X_y=True)
    save_model(xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(iris_X, iris_y), staged,
               version="2.0.0", feature_names=names)
    for f in staged.iterdir():  # replace the files the server reads
        shutil.copyfile(f, root / "xgb-iris" / f.name)

    assert remote.reload("xgb-iris") == {"message": "Reloading model xgb-iris"}
    assert local.reload("xgb-iris") == {"message": "Reloading model xgb-iris"}
    assert local.predict("xgb-iris", columns(names, X[:2]))["model_version"] == "2.0.0"
    deadline = time.monotonic() + 30
    while remote.predict("xgb-iris", columns(names, X[:2]))["model_version"] != "2.0.0":
        assert time.monotonic() < deadline, "server did not swap in version 2.0.0"
        time.sleep(0.1)
    a = local.predict("xgb-iris", columns(names, X), correlation_id="r")
    b = remote.predict("xgb-iris", columns(names, X), correlation_id="r")
    assert a["probabilities"] == b["probabilities"]


def test_failed_local_reload_keeps_the_old_model(live):
    url, root, specs = live
    names, X = specs["sk-cancer-lr"]
    local = InferenceClient(remote=False, models_dir=root)
    before = local.predict("sk-cancer-lr", columns(names, X[:3]))
    meta_path = root / "sk-cancer-lr" / "metadata.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["sha256"] = "0" * 64  # the artifact no longer matches its pin
    meta_path.write_text(json.dumps(meta))
    try:
        assert local.reload("sk-cancer-lr")["message"] == "Reloading model sk-cancer-lr"
        after = local.predict("sk-cancer-lr", columns(names, X[:3]))
        assert after["prediction"] == before["prediction"]
        doc = local.health()
        assert doc["status"] == "degraded"
        assert any("sk-cancer-lr: reload failed" in r and "sha256 mismatch" in r
                   for r in doc["reasons"])
    finally:
        meta_path.write_text(original)
    local.reload("sk-cancer-lr")
    assert local.health()["status"] == "healthy"


def test_local_mode_is_thread_safe_during_reloads(live):
    """8 threads predict while the model is reloaded: no error, one answer throughout."""
    from concurrent.futures import ThreadPoolExecutor

    _, root, specs = live
    names, X = specs["sk-iris-rf"]
    local = InferenceClient(remote=False, models_dir=root)
    body = columns(names, X[:5])
    expected = local.predict("sk-iris-rf", body)["probabilities"]

    def hammer(_: int) -> list:
        return [local.predict("sk-iris-rf", body)["probabilities"] for _ in range(40)]

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(hammer, i) for i in range(8)]
        for _ in range(5):
            local.reload("sk-iris-rf")
        results = [p for f in futures for p in f.result(timeout=120)]
    assert len(results) == 320 and all(p == expected for p in results)
    assert local.health()["status"] == "healthy"


def test_local_model_that_does_not_load(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps(
        {"framework": "sklearn", "version": "1", "artifact": "model.joblib"}))
    (folder / "model.joblib").write_bytes(b"not a pickle")
    local = InferenceClient(remote=False, models_dir=tmp_path)
    with pytest.raises(ServiceUnavailableError, match="Model broken failed to load: .*unsafe"):
        local.predict("broken", ROW)
    assert "model broken: load failed" in local.health()["reasons"][0]
    # preload= surfaces the same failure when the client is built, not on first use.
    with pytest.raises(ServiceUnavailableError, match="Model broken failed to load"):
        InferenceClient(remote=False, models_dir=tmp_path, preload=["broken"])
    with pytest.raises(ModelNotFoundError, match="Model absent not found"):
        InferenceClient(remote=False, models_dir=tmp_path, preload=["absent"])
