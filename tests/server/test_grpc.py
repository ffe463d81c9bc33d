"""The Open Inference Protocol over gRPC, through Triton's own client (`tritonclient.grpc`)
against a real server process on loopback: the same answers as REST for every model kind,
errors with the REST messages and the right status codes, metadata, readiness, ids and
metrics shared with REST."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from serving_runtime import grpc_protocol as pb
from serving_runtime import save_model
from tests.support.metrics_text import metric_sum
from tests.support.runtime_helpers import RuntimeServer, free_port

N_ROWS = 200


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("grpc") / "models"
    Xb, yb = make_classification(n_samples=500, n_features=5, random_state=1)
    Xm, ym = make_classification(n_samples=500, n_features=5, n_informative=3, n_classes=3,
                                 random_state=2)
    Xr, yr = make_regression(n_samples=500, n_features=4, noise=0.1, random_state=3)
    words = np.array(["buy", "hold", "sell"])[ym]
    ests = {
        "sk-gb-binary": (GradientBoostingClassifier(n_estimators=15).fit(Xb, yb), Xb),
        "sk-logit-multi": (LogisticRegression(max_iter=500).fit(Xm, ym), Xm),
        "sk-rf-reg": (RandomForestRegressor(n_estimators=8, random_state=0).fit(Xr, yr), Xr),
        "sk-words": (LogisticRegression(max_iter=500).fit(Xm, words), Xm),
        "xgb-multi": (xgb.XGBClassifier(n_estimators=15, max_depth=3).fit(Xm, ym), Xm),
        "xgb-reg": (xgb.XGBRegressor(n_estimators=15, max_depth=3).fit(Xr, yr), Xr),
        "lgb-binary": (lgb.LGBMClassifier(n_estimators=15, verbose=-1).fit(Xb, yb), Xb),
        "lgb-reg": (lgb.LGBMRegressor(n_estimators=15, verbose=-1).fit(Xr, yr), Xr),
    }
    for name, (est, X) in ests.items():
        save_model(est, root / name, version="2.1.0", sample=X[:5])
    rng = np.random.default_rng(7)
    return root, {n: X[rng.choice(len(X), N_ROWS, replace=False)] for n, (_, X) in ests.items()}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    srv = RuntimeServer(models[0], grpc=True, env={"MAX_BODY_BYTES": "200000"},
                        log_path=tmp_path_factory.mktemp("log") / "grpc.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def triton(server: RuntimeServer) -> Iterator[tg.InferenceServerClient]:
    client = tg.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: RuntimeServer) -> Iterator:
    """Our own messages on a plain channel: for what tritonclient never sends (typed
    contents, broken encodings)."""
    channel = grpc.insecure_channel(server.grpc_address)

    def call(method: str, request, metadata=()):
        req_cls, resp_cls = pb.METHODS[method]
        fn = channel.unary_unary(f"/{pb.SERVICE}/{method}",
                                 request_serializer=req_cls.SerializeToString,
                                 response_deserializer=resp_cls.FromString)
        return fn.with_call(request, metadata=metadata, timeout=30)

    yield call
    channel.close()


def _outputs(name: str) -> list[str]:
    return ["predict"] if name.endswith("reg") else ["predict", "predict_proba"]


def _rest(server: RuntimeServer, name: str, X: np.ndarray) -> dict:
    body = {"inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": "FP64",
                        "data": X.ravel().tolist()}],
            "outputs": [{"name": o} for o in _outputs(name)]}
    resp = server.client.post(f"/v2/models/{name}/infer", json=body)
    assert resp.status_code == 200, resp.text
    return {o["name"]: o for o in resp.json()["outputs"]}


def _infer_input(X: np.ndarray, datatype: str = "FP64", name: str = "input-0") -> tg.InferInput:
    inp = tg.InferInput(name, list(X.shape), datatype)
    inp.set_data_from_numpy(X)
    return inp


MODELS = ["sk-gb-binary", "sk-logit-multi", "sk-rf-reg", "sk-words", "xgb-multi", "xgb-reg",
          "lgb-binary", "lgb-reg"]


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_gets_the_rest_answers(server, triton, models, name):
    X = models[1][name]
    result = triton.infer(name, [_infer_input(X)],
                          outputs=[tg.InferRequestedOutput(o) for o in _outputs(name)])
    rest = _rest(server, name, X)
    for out in _outputs(name):
        got = result.as_numpy(out)
        want = rest[out]
        assert list(got.shape) == want["shape"]
        assert result.get_output(out).datatype == want["datatype"]
        if want["datatype"] == "BYTES":
            assert [b.decode() for b in got.ravel()] == want["data"]
        else:
            assert got.ravel().tolist() == want["data"]  # bit for bit: the same code path
    assert result.get_response().model_version == "2.1.0"


@pytest.mark.parametrize("name", ["sk-logit-multi", "xgb-reg", "lgb-binary"])
def test_typed_contents_answer_typed_and_equal_raw(server, stub, models, name):
    X = models[1][name][:17]
    typed = pb.v2_to_request({"inputs": [{"name": "input-0", "shape": list(X.shape),
                                          "datatype": "FP64", "data": X.ravel().tolist()}]},
                             name, raw=False)
    assert not typed.raw_input_contents
    resp, _ = stub("ModelInfer", typed)
    assert not resp.raw_output_contents  # asked typed, answered typed
    raw_resp, _ = stub("ModelInfer", pb.v2_to_request(
        {"inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": "FP64",
                     "data": X.ravel().tolist()}]}, name))
    assert len(raw_resp.raw_output_contents) == 1
    assert pb.response_to_v2(resp)["outputs"] == pb.response_to_v2(raw_resp)["outputs"]
    assert pb.response_to_v2(resp)["outputs"][0]["data"] == \
        _rest(server, name, X)["predict"]["data"]


def test_per_feature_inputs_and_float32(server, triton, models):
    """One input per feature, named by feature (the REST by-feature form), and FP32."""
    X = models[1]["lgb-reg"][:9]
    inputs = [_infer_input(X[:, [j]].astype(np.float32), "FP32", f"f{j}")
              for j in range(X.shape[1])]
    got = triton.infer("lgb-reg", inputs).as_numpy("predict").ravel()
    want = _rest(server, "lgb-reg", X.astype(np.float32).astype(np.float64))["predict"]["data"]
    assert got.tolist() == want


def _error(fn) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return info.value


def test_errors_carry_the_rest_message_and_a_grpc_code(server, triton, models):
    X = models[1]["xgb-reg"][:3]
    e = _error(lambda: triton.infer("xgb-reg", [_infer_input(X[:, :3])]))
    assert e.status() == "StatusCode.INVALID_ARGUMENT"
    assert "has shape [3, 3]; the model takes one input of shape [rows, 4]" in e.message()
    e = _error(lambda: triton.infer("no-such-model", [_infer_input(X)]))
    assert e.status() == "StatusCode.NOT_FOUND" and "no-such-model" in e.message()
    e = _error(lambda: triton.infer("xgb-reg", [_infer_input(X)], model_version="9.9"))
    assert e.status() == "StatusCode.NOT_FOUND" and "9.9" in e.message()
    bad = X.copy()
    bad[1, 2] = np.inf
    e = _error(lambda: triton.infer("xgb-reg", [_infer_input(bad)]))
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "f2" in e.message()
    e = _error(lambda: triton.infer("xgb-reg", [_infer_input(X)],
                                    outputs=[tg.InferRequestedOutput("predict_proba")]))
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "unknown outputs" in e.message()
    words = np.array([[b"a", b"b", b"c", b"d"]], dtype=np.object_)
    e = _error(lambda: triton.infer("xgb-reg", [_infer_input(words, "BYTES")]))
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "BYTES" in e.message()
    big = np.zeros((8000, 4))  # 256 kB over MAX_BODY_BYTES=200000
    e = _error(lambda: triton.infer("xgb-reg", [_infer_input(big)]))
    assert e.status() == "StatusCode.RESOURCE_EXHAUSTED"
    # the server still answers after each of them
    assert triton.infer("xgb-reg", [_infer_input(X)]).as_numpy("predict").shape == (3, 1)


def test_broken_encodings_are_named(stub, models):
    X = models[1]["sk-rf-reg"][:2]
    body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64",
                        "data": X.ravel().tolist()}]}
    short = pb.v2_to_request(body, "sk-rf-reg")
    short.raw_input_contents[0] = short.raw_input_contents[0][:-8]
    both = pb.v2_to_request(body, "sk-rf-reg")
    both.inputs[0].contents.fp64_contents.extend(X.ravel().tolist())
    extra = pb.v2_to_request(body, "sk-rf-reg")
    extra.raw_input_contents.append(b"\0" * 8)
    wrong_field = pb.v2_to_request(body, "sk-rf-reg", raw=False)
    wrong_field.inputs[0].datatype = "INT64"
    for req, words in [(short, "needs 64 bytes of raw_input_contents, got 56"),
                       (both, "both contents and raw_input_contents"),
                       (extra, "raw_input_contents has 2 entries for 1 inputs"),
                       (wrong_field, "carries fp64_contents; its values go in "
                                     "contents.int64_contents")]:
        with pytest.raises(grpc.RpcError) as info:
            stub("ModelInfer", req)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in info.value.details()


def test_metadata_and_readiness(server, triton, models):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("sk-words")
    assert triton.is_model_ready("sk-words", "2.1.0")
    meta = triton.get_server_metadata()
    assert meta.name == server.client.get("/v2").json()["name"]
    rest = server.client.get("/v2/models/sk-words").json()
    m = triton.get_model_metadata("sk-words")
    assert (m.name, list(m.versions), m.platform) == (rest["name"], rest["versions"],
                                                     rest["platform"])
    assert [(o.name, o.datatype, list(o.shape)) for o in m.outputs] == \
        [(o["name"], o["datatype"], o["shape"]) for o in rest["outputs"]]
    e = _error(lambda: triton.is_model_ready("no-such-model"))
    assert e.status() == "StatusCode.NOT_FOUND"


def test_correlation_id_round_trip_and_shared_metrics(server, stub, models):
    X = models[1]["lgb-binary"][:4]
    req = pb.v2_to_request({"inputs": [{"name": "input-0", "shape": [4, 5], "datatype": "FP64",
                                        "data": X.ravel().tolist()}]}, "lgb-binary")

    def served() -> float:
        text = server.client.get("/metrics").text
        return metric_sum(text, "inference_requests_total", model_name="lgb-binary",
                          status="success")

    before = served()
    resp, call = stub("ModelInfer", req, metadata=(("x-correlation-id", "trade-42"),))
    assert ("x-correlation-id", "trade-42") in call.trailing_metadata()
    assert resp.id == "trade-42"
    assert served() == before + 1
    # a hostile id is not echoed: the answer carries a fresh one
    _, call = stub("ModelInfer", req, metadata=(("x-correlation-id", "x" * 300),))
    cid = dict(call.trailing_metadata())["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", cid)


def test_two_servers_on_one_port_is_an_error(models, tmp_path):
    """One process alone does not share its port: a second server fails to start naming it
    (with WORKERS > 1 the workers share it: tests/server/test_workers.py)."""
    port = free_port()
    first = RuntimeServer(models[0], env={"GRPC_PORT": str(port)}, log_path=tmp_path / "1.log")
    try:
        first.wait_ready()
        second = RuntimeServer(models[0], env={"GRPC_PORT": str(port)},
                               log_path=tmp_path / "2.log")
        try:
            assert second.proc.wait(timeout=60) != 0
            assert f"cannot listen on 127.0.0.1:{port} (GRPC_PORT)" in second.logs()
        finally:
            second.stop()
        client = tg.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready()
        client.close()
    finally:
        first.stop()


def test_workers_share_the_grpc_port(models, tmp_path):
    """With WORKERS=2 each worker process serves gRPC on the one port (SO_REUSEPORT): both
    start, and new connections are answered."""
    srv = RuntimeServer(models[0], grpc=True, args=["--workers", "2"],
                        log_path=tmp_path / "w.log")
    try:
        srv.wait_ready()  # (one worker's answer: the other may still be starting)
        deadline = time.monotonic() + 60
        while srv.logs().count("gRPC listening") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.logs().count("gRPC listening") == 2, srv.logs()
        X = models[1]["xgb-multi"][:2]
        for _ in range(8):  # fresh connections, spread over the workers by the kernel
            client = tg.InferenceServerClient(srv.grpc_address)
            assert client.infer("xgb-multi", [_infer_input(X)]).as_numpy("predict").shape \
                == (2, 1)
            client.close()
    finally:
        srv.stop()
