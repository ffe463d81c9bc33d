"""Hostile request inputs against a real server (issue 12, part A), one test per class:
numbers beyond float32, strings that cannot be encoded (lone UTF-16 surrogates), ids
echoed into the X-Correlation-ID header, V2 datatypes and shapes, and the OpenAPI
document's declared parameters and status codes. Each answer must be a 4xx JSON error in
the documented shape naming the problem, never a 500, a plain-text body or a silently
wrong prediction."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.battery.battery_zoo import (
    CORRELATION_ID_RE,
    F32_MAX,
    ZOO_FEATURES,
    error_shape_problem,
)

HEX32 = re.compile(r"[0-9a-f]{32}")


def row(model: str, **values: float) -> dict[str, list[float]]:
    feats = {f"f{j}": [0.25] for j in range(ZOO_FEATURES[model])}
    feats.update({k: [v] for k, v in values.items()})
    return feats


def post(srv, path: str, body, *, raw: bytes | None = None, headers=None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    return srv.client.post(path, content=content,
                           headers={"content-type": "application/json", **(headers or {})})


def assert_error(r: httpx.Response, path: str, status: int, *fragments: str) -> str:
    """The documented error shape, the status, and a message holding every fragment."""
    assert r.status_code == status, (r.status_code, r.text)
    problem = error_shape_problem(path, r.status_code, r.headers, r.content)
    assert problem is None, problem
    msg = r.json()["error" if path.startswith("/v2") else "detail"]
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    return msg


# --- 1. finite numbers beyond float32 ---------------------------------------------------

@pytest.mark.parametrize("model", sorted(ZOO_FEATURES))
@pytest.mark.parametrize("value", [1e39, -3.5e38, 1e308, 10**39])
def test_beyond_float32_is_422_naming_the_feature(zoo_server, model, value):
    for n_rows in (1, 3):  # the one-row path and the general path
        feats = row(model)
        feats = {k: v * n_rows for k, v in feats.items()}
        feats["f2"] = [0.5] * (n_rows - 1) + [value]
        r = post(zoo_server, "/predict", {"model_name": model, "features": feats})
        assert_error(r, "/predict", 422, "f2", "float32")


def test_float32_limit_itself_is_accepted(zoo_server):
    for model in sorted(ZOO_FEATURES):
        r = post(zoo_server, "/predict", {"model_name": model,
                                          "features": row(model, f1=F32_MAX, f3=-F32_MAX)})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("model", ["sk-binary", "xgb-reg"])
def test_beyond_float32_in_a_batch_names_request_and_feature(zoo_server, model):
    good = {"model_name": model, "features": row(model)}
    bad = {"model_name": model, "features": row(model, f4=-1e39)}
    r = post(zoo_server, "/predict/batch", {"requests": [good, good, bad, good]})
    assert_error(r, "/predict/batch", 422, "requests[2]", "f4", "float32")


@pytest.mark.parametrize("model", ["sk-reg", "xgb-multi"])
def test_beyond_float32_in_v2_names_the_feature(zoo_server, model):
    n = ZOO_FEATURES[model]
    data = [0.1] * n
    data[1] = 1e39
    body = {"inputs": [{"name": "input-0", "shape": [1, n], "datatype": "FP64", "data": data}]}
    assert_error(post(zoo_server, f"/v2/models/{model}/infer", body),
                 "/v2/models", 422, "f1", "float32")
    per_feature = {"inputs": [{"name": f"f{j}", "shape": [1], "datatype": "FP64",
                               "data": [data[j]]} for j in range(n)]}
    assert_error(post(zoo_server, f"/v2/models/{model}/infer", per_feature),
                 "/v2/models", 422, "f1", "float32")


# --- 2. strings that cannot be encoded -------------------------------------------------

SURROGATE_BODIES = [
    ("/predict", b'{"model_name": "\\ud800", "features": {"f0": [1.0]}}'),
    ("/predict", b'{"model_name": "sk-binary", "features": {"f0\\udc00": [1.0]}}'),
    ("/predict", b'{"model_name": "sk-binary", "features": {"f0": [1.0]}, '
                 b'"correlation_id": "a\\ud83d"}'),
    ("/predict", b'{"model_name": "sk-binary", "features": {"f0": [NaN]}, "x\\udfff": 1}'),
    ("/predict/batch", b'{"requests": [{"model_name": "\\udbff", "features": {}}]}'),
    ("/v2/models/sk-binary/infer",
     b'{"id": "\\ud800", "inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", '
     b'"data": [1, 2, 3, 4, 5, 6]}]}'),
    ("/v2/models/sk-binary/infer",
     b'{"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", '
     b'"data": [1, 2, 3, 4, 5, 6]}], "outputs": [{"name": "\\udc00"}]}'),
    ("/v2/models/sk-binary/infer",
     b'{"inputs": [{"name": "f0\\ud800", "shape": [1], "datatype": "FP64", "data": [1]}]}'),
    # the same as raw bytes (what a UTF-8 encoder with surrogatepass writes): invalid UTF-8
    ("/predict", '{"model_name": "\ud800", "features": {}}'.encode("utf-8", "surrogatepass")),
]


@pytest.mark.parametrize("path,raw", SURROGATE_BODIES, ids=[f"{p}-{i}" for i, (p, _) in
                                                             enumerate(SURROGATE_BODIES)])
def test_lone_surrogates_get_a_json_400(zoo_server, path, raw):
    r = post(zoo_server, path, None, raw=raw, headers={"X-Correlation-ID": "sur-1"})
    assert_error(r, path, 400, "malformed JSON body")
    assert r.headers["x-correlation-id"] == "sur-1"
    if not path.startswith("/v2"):
        assert r.json()["correlation_id"] == "sur-1"


def test_echoed_names_are_bounded(zoo_server):
    """A 100 kB model or feature name is not echoed back whole."""
    r = post(zoo_server, "/predict", {"model_name": "m" * 100_000, "features": {}})
    msg = assert_error(r, "/predict", 404, "not found")
    assert len(msg) < 500
    feats = row("sk-binary")
    feats["k" * 100_000] = [1.0]
    r = post(zoo_server, "/predict", {"model_name": "sk-binary", "features": feats})
    msg = assert_error(r, "/predict", 422, "unknown features: kkk")
    assert len(msg) < 2000


# --- 3. ids echoed into the X-Correlation-ID header -------------------------------------

BAD_HEADER_IDS = [b"x" * 129, b"\xe9t\xe9", "注文".encode(), b"a b", b"a,b", b"a;b", b"a/b",
                  b"y" * 4000, b"\xff"]


@pytest.mark.parametrize("value", BAD_HEADER_IDS, ids=lambda v: repr(v[:12]))
def test_invalid_header_ids_are_not_echoed(zoo_server, value):
    model = "xgb-binary"
    ok = {"model_name": model, "features": row(model)}
    v2 = {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP64", "data": [0.1] * 6}]}
    for path, body, status in [("/predict", ok, 200), ("/predict", {"model_name": "ghost",
                                                                    "features": {}}, 404),
                               ("/predict/batch", {"requests": [ok]}, 200),
                               (f"/v2/models/{model}/infer", v2, 200),
                               ("/v2/models/ghost/infer", v2, 404)]:
        r = post(zoo_server, path, body, headers={"X-Correlation-ID": value})
        assert r.status_code == status, r.text
        cid = r.headers["x-correlation-id"]
        assert HEX32.fullmatch(cid), cid  # a fresh id, not the rejected one
        doc = r.json()
        if path == "/predict":
            assert doc["correlation_id"] == cid
    for path in ("/health", "/v2/models/ghost", "/reload/ghost", "/nope"):
        method = "POST" if path.startswith("/reload") else "GET"
        r = zoo_server.client.request(method, path, headers={"X-Correlation-ID": value})
        assert HEX32.fullmatch(r.headers["x-correlation-id"]), (path, r.headers)


def test_valid_header_ids_are_echoed_on_every_route(zoo_server):
    cid = "Order-42.a_b:c"
    for method, path in [("GET", "/health"), ("GET", "/metrics"), ("GET", "/v2"),
                         ("GET", "/v2/health/ready"), ("GET", "/v2/models/sk-reg"),
                         ("GET", "/v2/models/ghost/ready"), ("POST", "/reload/ghost"),
                         ("GET", "/no/such/route"), ("DELETE", "/predict")]:
        r = zoo_server.client.request(method, path, headers={"X-Correlation-ID": cid})
        assert r.headers.get("x-correlation-id") == cid, (method, path, r.status_code)
    assert CORRELATION_ID_RE.fullmatch("a" * 128) and not CORRELATION_ID_RE.fullmatch("a" * 129)
    r = post(zoo_server, "/predict", {"model_name": "sk-reg", "features": row("sk-reg")},
             headers={"X-Correlation-ID": "a" * 128})
    assert r.headers["x-correlation-id"] == "a" * 128 == r.json()["correlation_id"]


@pytest.mark.parametrize("cid", ["a b", "x" * 129, "注文-1", "a\nb", "", 7])
def test_invalid_body_correlation_id_is_422_with_a_fresh_id(zoo_server, cid):
    body = {"model_name": "sk-binary", "features": row("sk-binary"), "correlation_id": cid}
    r = post(zoo_server, "/predict", body)
    assert_error(r, "/predict", 422, "'correlation_id' must be a non-empty string",
                 "A-Z a-z 0-9")
    assert HEX32.fullmatch(r.headers["x-correlation-id"])


def test_unknown_routes_and_methods_get_the_documented_error_shape(zoo_server):
    for method, path, status in [("GET", "/nope", 404), ("GET", "/v2/models/a/b/c/d", 404),
                                 ("DELETE", "/predict", 405), ("PUT", "/v2/health/live", 405),
                                 ("POST", "/v2/models//infer", 404)]:
        r = zoo_server.client.request(method, path)
        assert_error(r, path, status)


# --- 4. V2 datatypes and shapes --------------------------------------------------------

def v2(datatype: str, data, shape=None, **extra) -> dict:
    return {"inputs": [{"name": "x", "shape": shape or [1, 6], "datatype": datatype,
                        "data": data, **extra}]}


V2_REFUSED = [
    (v2("INT8", [1, 2, 3, 4, 5, -129]), "input 'x'", "INT8", "-129"),
    (v2("INT8", [1, 2, 3, 4, 5, 128]), "input 'x'", "INT8", "128"),
    (v2("UINT8", [1, 2, 3, 4, 5, -1]), "input 'x'", "UINT8"),
    (v2("UINT16", [1, 2, 3, 4, 5, 65536]), "input 'x'", "UINT16"),
    (v2("UINT64", [1, 2, 3, 4, 5, 2**64]), "input 'x'", "UINT64"),
    (v2("INT64", [1, 2, 3, 4, 5, 0.5]), "input 'x'", "INT64", "integer"),
    (v2("INT32", [1, 2, 3, 4, 5, True]), "input 'x'", "INT32"),
    (v2("BOOL", [True, False, True, False, True, 2]), "input 'x'", "BOOL"),
    (v2("BOOL", [True, False, True, False, True, 1.0]), "input 'x'", "BOOL"),
    (v2("FP16", [1, 2, 3, 4, 5, 70000.0]), "input 'x'", "FP16"),
    (v2("FP32", [1, 2, 3, 4, 5, 1e39]), "input 'x'", "FP32"),
    (v2("FP32", [1, 2, 3, 4, 5, True]), "input 'x'", "FP32"),
    (v2("BYTES", ["a", "b", "c", "d", "e", "f"]), "datatype 'BYTES' is not supported"),
    (v2("FP64", [1] * 6, shape=[2, 6]), "shape [2, 6] needs 12 values, data has 6"),
    (v2("FP64", [[1] * 12], shape=[2, 6]), "input 'x'", "[1, 12]", "[2, 6]"),
    (v2("FP64", [[1] * 6, [1] * 5 + [[1]]], shape=[2, 6]), "input 'x'", "nested"),
    (v2("FP64", [[1, 2, 3], [4, 5, 6]], shape=[1, 6]), "input 'x'", "[2, 3]"),
    (v2("FP64", [1] * 6, shape=[2**62, 2**62]), "needs", "data has 6"),
    (v2("FP64", [1] * 6, shape=[1, -6]), "'shape' must be a list of non-negative integers"),
    (v2("FP64", [1] * 6, shape=[True, 6]), "'shape' must be a list of non-negative integers"),
    (v2("FP64", [1] * 6, parameters=5), "input 'x'", "'parameters' must be an object"),
    ({**v2("FP64", [1] * 6), "parameters": "np"}, "'parameters' must be an object"),
    ({**v2("FP64", [1] * 6), "outputs": [{"name": "predict", "parameters": []}]},
     "'parameters' must be an object"),
    ({**v2("FP64", [1] * 6), "id": "x" * 257}, "'id'", "256"),
    ({**v2("FP64", [1] * 6), "id": "a\nb"}, "'id'"),
    ({"inputs": [{"name": "x", "shape": [1, 6], "datatype": {"a": 1}, "data": [1] * 6}]},
     "input 'x'", "datatype"),
    ({"inputs": [{"name": "x", "shape": [1, 6], "datatype": ["FP64"], "data": [1] * 6}]},
     "input 'x'", "datatype"),
]


@pytest.mark.parametrize("body,fragments", [(c[0], c[1:]) for c in V2_REFUSED],
                         ids=[f"{i}-{str(c[0])[:50]}" for i, c in enumerate(V2_REFUSED)])
def test_v2_datatypes_and_shapes_are_enforced(zoo_server, body, fragments):
    r = post(zoo_server, "/v2/models/sk-binary/infer", body)
    assert_error(r, "/v2/models", 422, *fragments)


@pytest.mark.parametrize("body", [
    v2("INT8", [1, 2, 3, -128, 127, 0]),
    v2("UINT64", [0, 1, 2, 3, 4, 2**64 - 1]),
    v2("INT64", [1, 2, 3, 4, 5, 6.0]),  # an integral JSON number is an integer
    v2("BOOL", [True, False, True, False, True, False]),
    v2("FP16", [1.5, 2, 3, 4, 5, -65504.0]),
    v2("FP32", [1.5, 2, 3, 4, 5, F32_MAX]),
    v2("FP64", [[1.5, 2, 3, 4, 5, 6]], shape=[1, 6]),
    v2("FP64", [1] * 6, parameters={"content_type": "np"}),
    {**v2("FP64", [1] * 6), "id": "注文-1", "parameters": {}},
])
def test_v2_values_in_range_are_accepted(zoo, zoo_server, body):
    r = post(zoo_server, "/v2/models/sk-binary/infer", body)
    assert r.status_code == 200, r.text
    inp = body["inputs"][0]
    flat = inp["data"][0] if type(inp["data"][0]) is list else inp["data"]
    want = zoo.estimators["sk-binary"].predict([[float(v) for v in flat]]).tolist()
    assert r.json()["outputs"][0]["data"] == want


def test_v2_id_outside_the_header_rule_stays_in_the_body(zoo_server):
    r = post(zoo_server, "/v2/models/sk-binary/infer", {**v2("FP64", [1] * 6), "id": "注文 1"})
    assert r.status_code == 200 and r.json()["id"] == "注文 1"
    assert HEX32.fullmatch(r.headers["x-correlation-id"])
    r = post(zoo_server, "/v2/models/sk-binary/infer", {**v2("FP64", [1] * 6), "id": "req-9"})
    assert r.headers["x-correlation-id"] == "req-9" == r.json()["id"]


# --- 5. the OpenAPI document -----------------------------------------------------------

EXPECTED_STATUSES = {
    ("post", "/predict"): {"200", "400", "404", "413", "422", "503"},
    ("post", "/predict/batch"): {"200", "400", "404", "413", "422", "503"},
    ("post", "/explain"): {"200", "400", "404", "413", "422", "503"},
    ("get", "/health"): {"200", "503"},
    ("get", "/metrics"): {"200"},
    ("post", "/reload/{model_name}"): {"202", "404"},
    ("get", "/v2"): {"200"},
    ("get", "/v2/health/live"): {"200"},
    ("get", "/v2/health/ready"): {"200", "503"},
    ("get", "/v2/models/{name}"): {"200", "404", "503"},
    ("get", "/v2/models/{name}/ready"): {"200", "404", "503"},
    ("post", "/v2/models/{name}/infer"): {"200", "400", "404", "413", "422", "503"},
    ("get", "/v2/models/{name}/versions/{version}"): {"200", "404", "503"},
    ("get", "/v2/models/{name}/versions/{version}/ready"): {"200", "404", "503"},
    ("post", "/v2/models/{name}/versions/{version}/infer"):
        {"200", "400", "404", "413", "422", "503"},
}


def test_openapi_declares_path_parameters_statuses_and_schemas(zoo_server):
    doc = zoo_server.client.get("/openapi.json").json()
    seen = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path, declared)
            seen[(method, path)] = set(op["responses"])
            for status, resp in op["responses"].items():
                content = resp.get("content")
                assert content, (method, path, status, "no content")
                for media in content.values():
                    assert media.get("schema"), (method, path, status, "no schema")
                assert "X-Correlation-ID" in resp.get("headers", {}), (method, path, status)
    assert seen == EXPECTED_STATUSES


def test_documented_bounds_are_the_enforced_ones():
    """schemas.py (OpenAPI, client) states the same bounds the hand-written checks apply."""
    from serving_runtime import schemas
    from serving_runtime.models import features, inference

    assert schemas.FLOAT32_MAX == features.FLOAT32_MAX == F32_MAX
    assert f"^{inference.CORRELATION_ID_PATTERN}$" == schemas.CORRELATION_ID_PATTERN
    assert CORRELATION_ID_RE.pattern == inference.CORRELATION_ID_PATTERN
    assert schemas.V2_ID_MAX_LENGTH == inference.MAX_V2_ID_LENGTH
    assert schemas.V2_MAX_DIMS == inference.V2_MAX_DIMS


@pytest.mark.parametrize("cid", ["注文 1", "a b", "x" * 129])
def test_client_modes_refuse_an_invalid_correlation_id_alike(zoo, zoo_server, cid):
    from serving_runtime.client import InferenceClient, InvalidInputError

    feats = row("sk-binary")
    errors = []
    for client in (InferenceClient(models_dir=zoo.models_dir),
                   InferenceClient(remote=True, url=zoo_server.url, timeout=30)):
        try:
            with pytest.raises(InvalidInputError) as got:
                client.predict("sk-binary", feats, correlation_id=cid)
        finally:
            client.close()
        errors.append((got.value.status_code, got.value.message))
    assert errors[0] == errors[1] and errors[0][0] == 422, errors
    assert "'correlation_id' must be a non-empty string" in errors[0][1]
