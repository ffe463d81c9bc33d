"""Property-based fuzzing (hypothesis) of every route of a real running runtime.

A real `python -m serving_runtime` (uvicorn on loopback, the hot-path layer in front of
FastAPI) serves the zoo's six real model folders. For each route, hypothesis builds
valid-shaped requests for real model names and mutates them with hostile values: floats
beyond float32 (1e39) and float64, NaN/Infinity literals, integers beyond float range,
lone UTF-16 surrogates (escaped, and as raw invalid UTF-8), long and non-ASCII ids,
hostile header bytes, wrong types, wrong V2 datatypes and shapes.

An oracle written from the documented contract (docs/contracts.md, "Errors and
validation") says whether each request is valid. Every answer is judged, not only the
first failure: the test counts 5xx, transport errors (a reset, a closed connection),
error bodies or X-Correlation-ID headers without the documented shape, invalid inputs
answered 2xx (silently wrong predictions), valid inputs refused, and 2xx answers holding
non-finite numbers. It prints `fuzz: N inputs, K 5xx` and a line per route, then fails if
any count is not zero. N1V1_SOAK=1 runs 10x the examples; N1V1_FUZZ_SEED repeats a run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.battery.battery_zoo import (
    CLASSIFIERS,
    CORRELATION_ID_RE,
    F32_MAX,
    ZOO_FEATURES,
    error_shape_problem,
)

MODELS = sorted(ZOO_FEATURES)
V2_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                "INT64", "FP16", "FP32", "FP64", "BYTES"]
INT_RANGES = {"UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1),
              "UINT64": (0, 2**64 - 1), "INT8": (-2**7, 2**7 - 1),
              "INT16": (-2**15, 2**15 - 1), "INT32": (-2**31, 2**31 - 1),
              "INT64": (-2**63, 2**63 - 1)}
FP_MAX = {"FP16": 65504.0, "FP32": F32_MAX, "FP64": F32_MAX}  # tree models: float32
V2_ID_MAX = 256

# --- hostile values --------------------------------------------------------------------

SURROGATES = ["\ud800", "\udfff", "a\udc00b", "\ud83d", "x\ud800\ud800"]
HOSTILE_FLOATS = [1e39, -1e39, 3.5e38, -3.4028236e38, 1e308, -1.7976931348623157e308,
                  F32_MAX, -F32_MAX, 1e38, 5e-324, 1e-45, -0.0, 0.0, 65504.0, 65520.0,
                  2.0**64, -(2.0**63), 3.0, 127.0, 0.5]
HOSTILE_INTS = [10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 10**39, -129, -128, 127,
                128, 255, 256, -1, 0, 1, 2, 65536, 2**31, 2**32]
NON_FINITE = [math.nan, math.inf, -math.inf]
HOSTILE_IDS = ["x" * 129, "a" * 5000, "é" * 64, "注文-1", "id with space", "a/b", "a\tb",
               "a\nb", "\x00", "", "ok-id_1.2:3", "y" * 128, "\u2028", "\ufeffbom", "z" * 257]

surrogate_text = st.one_of(
    st.sampled_from(SURROGATES),
    st.text(st.characters(codec=None, categories=("Cs",)), min_size=1, max_size=3),
    st.tuples(st.text(max_size=5), st.sampled_from(SURROGATES)).map("".join),
)
hostile_text = st.one_of(surrogate_text, st.sampled_from(HOSTILE_IDS), st.text(max_size=30))
hostile_number = st.one_of(
    st.sampled_from(HOSTILE_FLOATS), st.sampled_from(HOSTILE_INTS),
    st.sampled_from(NON_FINITE), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)
hostile_value = st.one_of(
    hostile_number, hostile_number, hostile_text, st.booleans(), st.none(),
    # fresh objects each time (st.just would share one, which later mutations would edit)
    st.lists(st.floats(-10, 10), max_size=2), st.builds(dict), st.builds(lambda: {"v": 1.0}),
)
header_values = st.one_of(
    st.none(),
    st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True).map(str.encode),
    st.sampled_from([b"x" * 129, b"x" * 6000, b"\xe9t\xe9", "注文".encode(), b"a b",
                     b"", b"a,b", b"\x7f", b"id\xff", b"y" * 128, b"a;b=c"]),
)
cid_text = st.from_regex(r"[A-Za-z0-9._:-]{1,32}", fullmatch=True)


# --- the oracle: the documented contract, written independently of the server ----------


def number_ok(v: Any, limit: float = F32_MAX) -> bool:
    """A finite JSON number (not a boolean) of magnitude at most `limit`."""
    if type(v) not in (int, float):
        return False
    try:
        return math.isfinite(v) and abs(v) <= limit
    except OverflowError:
        return False


def has_surrogate(obj: Any) -> bool:
    if type(obj) is str:
        return any("\ud800" <= ch <= "\udfff" for ch in obj)
    if type(obj) is dict:
        return any(has_surrogate(k) or has_surrogate(v) for k, v in obj.items())
    if type(obj) is list:
        return any(has_surrogate(x) for x in obj)
    return False


def predict_valid(body: Any) -> bool:
    if type(body) is not dict or not {"model_name", "features"} <= set(body) or not set(
            body) <= {"model_name", "features", "correlation_id"}:
        return False
    cid = body.get("correlation_id")
    if cid is not None and not (type(cid) is str and CORRELATION_ID_RE.fullmatch(cid)):
        return False
    name = body["model_name"]
    if type(name) is not str or name not in ZOO_FEATURES:
        return False
    feats = body["features"]
    if type(feats) is not dict or set(feats) != {f"f{j}" for j in range(ZOO_FEATURES[name])}:
        return False
    cols = list(feats.values())
    if not all(type(c) is list for c in cols) or len({len(c) for c in cols}) != 1:
        return False
    return len(cols[0]) > 0 and all(number_ok(v) for c in cols for v in c)


def batch_valid(body: Any) -> bool:
    if type(body) is not dict or not set(body) <= {"requests", "batch_size"}:
        return False
    bs = body.get("batch_size")
    # an integer as JSON Schema has it: 2.0 counts, 2.5 and true do not
    integral = type(bs) is int or (type(bs) is float and math.isfinite(bs) and bs.is_integer())
    if bs is not None and not (integral and bs >= 1):
        return False
    reqs = body.get("requests")
    return type(reqs) is list and len(reqs) > 0 and all(predict_valid(r) for r in reqs)


def value_ok(datatype: str, v: Any) -> bool:
    if datatype == "BOOL":
        return type(v) is bool
    if datatype in INT_RANGES:
        lo, hi = INT_RANGES[datatype]
        if type(v) is float and math.isfinite(v) and v.is_integer():
            v = int(v)
        return type(v) is int and lo <= v <= hi and abs(v) <= F32_MAX
    if datatype in FP_MAX:
        return number_ok(v, FP_MAX[datatype])
    return False  # BYTES, or not a datatype: never for a tree model


def dims_of(data: Any) -> list[int] | None:
    """The dims of a regular nested list (scalars at the leaves), None if irregular."""
    if type(data) is not list:
        return []
    if not data:
        return [0]
    subs = [dims_of(x) for x in data]
    if any(s is None for s in subs) or any(s != subs[0] for s in subs):
        return None
    return [len(data), *subs[0]]  # type: ignore[misc]


def flat(data: Any) -> list[Any]:
    if type(data) is not list:
        return [data]
    out: list[Any] = []
    for x in data:
        out.extend(flat(x))
    return out


def v2_input_valid(inp: Any) -> tuple[str, list[int]] | None:
    if type(inp) is not dict:
        return None
    name, shape, datatype, data = (inp.get("name"), inp.get("shape"), inp.get("datatype"),
                                   inp.get("data"))
    if type(name) is not str or not name or type(datatype) is not str:
        return None
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0
                                                       for d in shape):
        return None
    if type(data) is not list:
        return None
    dims = dims_of(data)
    if dims is None or (len(dims) > 1 and dims != shape):
        return None  # nested data must have exactly the declared shape
    values = flat(data) if data else []
    if len(values) != math.prod(shape) or not all(value_ok(datatype, v) for v in values):
        return None
    if "parameters" in inp and inp["parameters"] is not None and type(
            inp["parameters"]) is not dict:
        return None
    return name, shape


def v2_valid(body: Any, model: str) -> bool:
    n = ZOO_FEATURES[model]
    if type(body) is not dict or not set(body) <= {"id", "parameters", "inputs", "outputs"}:
        return False
    rid = body.get("id")
    if rid is not None and not (type(rid) is str and len(rid) <= V2_ID_MAX
                                and rid.isprintable() and not has_surrogate(rid)):
        return False
    params = body.get("parameters")
    if params is not None and type(params) is not dict:
        return False
    outs = body.get("outputs")
    if outs is not None:
        if type(outs) is not list or not all(type(o) is dict and type(o.get("name")) is str
                                             for o in outs):
            return False
        allowed = {"predict", "predict_proba"} if model in CLASSIFIERS else {"predict"}
        if not {o["name"] for o in outs} <= allowed:
            return False
    inputs = body.get("inputs")
    if type(inputs) is not list or not inputs:
        return False
    parsed = [v2_input_valid(i) for i in inputs]
    if any(p is None for p in parsed):
        return False
    names = {f"f{j}" for j in range(n)}
    if len(parsed) == 1 and not (parsed[0][0] in names and len(parsed[0][1]) == 1):
        shape = parsed[0][1]
        return len(shape) == 2 and shape[0] > 0 and shape[1] == n
    got = [p[0] for p in parsed]
    if len(set(got)) != len(got) or set(got) != names:
        return False
    shapes = [p[1] for p in parsed]
    if not all(len(s) == 1 or (len(s) == 2 and s[1] == 1) for s in shapes):
        return False
    rows = {s[0] for s in shapes}
    return len(rows) == 1 and rows.pop() > 0


# --- requests --------------------------------------------------------------------------


@dataclass
class Req:
    route: str
    method: str
    path: str  # already percent-encoded
    body: Any = None  # JSON-able Python object (encoded by `content`)
    raw: bytes | None = None  # or raw bytes
    header_cid: bytes | None = None
    valid: bool | None = None  # the oracle's verdict; None: not judged (GET routes)
    why: str = ""
    utf8_raw: bool = False  # write non-ASCII as raw UTF-8 (surrogates -> invalid UTF-8)

    def content(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        if self.body is None and self.method == "GET":
            return None
        if self.utf8_raw:
            text = json.dumps(self.body, ensure_ascii=False, allow_nan=True)
            return text.encode("utf-8", "surrogatepass")
        return json.dumps(self.body, allow_nan=True).encode()  # NaN/Infinity literals


def seg(name: str) -> str:
    """`name` as one path segment; "." and ".." percent-encoded, else the client would
    resolve them as dot segments and ask for another route."""
    if name in (".", ".."):
        return name.replace(".", "%2E")
    return quote(name.encode("utf-8", "surrogatepass"), safe="") or "x"


def rows_for(draw: Any, n: int, rows: int) -> list[list[float]]:
    return [[draw(st.floats(-5, 5, allow_nan=False)) for _ in range(n)] for _ in range(rows)]


@st.composite
def predict_body(draw: Any, model: str | None = None) -> tuple[Any, str]:
    """(body, what was mutated) for /predict: a valid body, then 0-3 mutations."""
    model = model or draw(st.sampled_from(MODELS))
    n = ZOO_FEATURES[model]
    n_rows = draw(st.integers(1, 4))
    X = rows_for(draw, n, n_rows)
    feats: dict[str, Any] = {f"f{j}": [X[i][j] for i in range(n_rows)] for j in range(n)}
    body: Any = {"model_name": model, "features": feats}
    if draw(st.booleans()):
        body["correlation_id"] = draw(cid_text)
    why = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["value", "value", "value", "column", "key", "rename",
                                     "model_name", "correlation_id", "extra", "drop",
                                     "whole"]))
        why.append(kind)
        feats = body.get("features") if type(body) is dict else None
        if kind == "value" and type(feats) is dict:
            cols = sorted(k for k, v in feats.items() if type(v) is list and v)
            if cols:
                col = draw(st.sampled_from(cols))
                feats[col][draw(st.integers(0, len(feats[col]) - 1))] = draw(hostile_value)
        elif kind == "column" and type(feats) is dict:
            feats[f"f{draw(st.integers(0, n - 1))}"] = draw(
                st.one_of(hostile_value, st.just([])))
        elif kind == "key" and type(feats) is dict:
            feats[draw(hostile_text)] = [1.0] * n_rows
        elif kind == "rename" and type(feats) is dict and feats:
            feats[draw(hostile_text)] = feats.pop(draw(st.sampled_from(sorted(feats))))
        elif kind == "model_name" and type(body) is dict:
            body["model_name"] = draw(st.one_of(hostile_text, hostile_value))
        elif kind == "correlation_id" and type(body) is dict:
            body["correlation_id"] = draw(st.one_of(hostile_text, hostile_value))
        elif kind == "extra" and type(body) is dict:
            body[draw(st.sampled_from(["priority", "Features", "\ud800", "x" * 300]))] = 1
        elif kind == "drop" and type(body) is dict:
            body.pop(draw(st.sampled_from(["model_name", "features"])), None)
        elif kind == "whole":
            body = draw(hostile_value)
    return body, ",".join(why)


@st.composite
def predict_req(draw: Any) -> Req:
    body, why = draw(predict_body())
    return Req("POST /predict", "POST", "/predict", body=body, header_cid=draw(header_values),
               valid=predict_valid(body) and not has_surrogate(body), why=why,
               utf8_raw=draw(st.booleans()))


@st.composite
def batch_req(draw: Any) -> Req:
    model = draw(st.sampled_from(MODELS))
    items, whys = [], []
    for _ in range(draw(st.integers(1, 5))):
        body, why = draw(predict_body(model if draw(st.booleans()) else None))
        items.append(body)
        whys.append(why)
    doc: Any = {"requests": items}
    if draw(st.booleans()):
        doc["batch_size"] = draw(st.one_of(st.integers(-3, 10), hostile_value))
    if draw(st.integers(0, 9)) == 0:
        doc = draw(st.sampled_from([{"requests": []}, {"requests": "x"}, [], {"reqs": items},
                                    {"requests": items, "extra": 1}]))
        whys.append("batch shape")
    return Req("POST /predict/batch", "POST", "/predict/batch", body=doc,
               header_cid=draw(header_values), valid=batch_valid(doc) and not has_surrogate(doc),
               why=";".join(whys), utf8_raw=draw(st.booleans()))


@st.composite
def v2_infer_req(draw: Any) -> Req:
    model = draw(st.sampled_from(MODELS))
    n = ZOO_FEATURES[model]
    n_rows = draw(st.integers(1, 4))
    X = rows_for(draw, n, n_rows)
    if draw(st.integers(0, 3)) == 0:  # one input per feature
        inputs = [{"name": f"f{j}", "shape": [n_rows] if draw(st.booleans()) else [n_rows, 1],
                   "datatype": "FP64", "data": [X[i][j] for i in range(n_rows)]}
                  for j in range(n)]
    else:
        data = X if draw(st.booleans()) else [v for row in X for v in row]
        inputs = [{"name": "input-0", "shape": [n_rows, n], "datatype": "FP64", "data": data}]
    body: Any = {"inputs": inputs}
    if draw(st.booleans()):
        outs = ["predict", "predict_proba"] if model in CLASSIFIERS else ["predict"]
        body["outputs"] = [{"name": o} for o in draw(st.lists(st.sampled_from(outs),
                                                              min_size=1, max_size=2))]
    if draw(st.booleans()):
        body["id"] = draw(cid_text)
    why = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["datatype", "datatype", "data", "data", "data", "shape",
                                     "shape", "id", "output", "name", "parameters", "inputs",
                                     "whole"]))
        why.append(kind)
        ins = body.get("inputs") if type(body) is dict else None
        inp = draw(st.sampled_from(ins)) if type(ins) is list and ins else None
        inp = inp if type(inp) is dict else None
        if kind == "datatype" and inp is not None:
            datatype = draw(st.one_of(st.sampled_from(V2_DATATYPES), hostile_value))
            inp["datatype"] = datatype
            size = len(flat(inp.get("data")))
            if type(datatype) is str and datatype in INT_RANGES and draw(st.booleans()):
                lo, hi = INT_RANGES[datatype]
                pick = st.sampled_from([lo, hi, lo - 1, hi + 1, 0, 1, 2.0, 0.5])
                inp["data"] = [draw(pick) for _ in range(size)]
            elif datatype == "BOOL" and draw(st.booleans()):
                inp["data"] = [draw(st.sampled_from([True, False, 0, 1, 2]))
                               for _ in range(size)]
            elif datatype == "BYTES" and draw(st.booleans()):
                inp["data"] = [draw(st.sampled_from(["a", "1.5", ""])) for _ in range(size)]
        elif kind == "data" and inp is not None:
            values = flat(inp.get("data"))
            if values:
                values[draw(st.integers(0, len(values) - 1))] = draw(hostile_value)
                inp["data"] = values  # flattened: V2 allows flat or nested
        elif kind == "shape" and inp is not None:
            inp["shape"] = draw(st.one_of(
                st.lists(st.integers(-2, 8), max_size=4), hostile_value,
                st.just([n_rows * n]), st.just([n, n_rows]), st.just([n_rows, n, 1]),
                st.just([2**62, 2**62]), st.just([0, n]), st.just([True, n])))
        elif kind == "id" and type(body) is dict:
            body["id"] = draw(st.one_of(hostile_text, hostile_value))
        elif kind == "output" and type(body) is dict:
            body["outputs"] = draw(st.one_of(st.just([{"name": draw(hostile_text)}]),
                                             hostile_value, st.just([{"nom": "predict"}])))
        elif kind == "name" and inp is not None:
            inp["name"] = draw(st.one_of(hostile_text, st.sampled_from(["f0", ""])))
        elif kind == "parameters" and type(body) is dict:
            body["parameters"] = draw(st.one_of(st.just({"content_type": "np"}), hostile_value))
        elif kind == "inputs" and type(body) is dict:
            body["inputs"] = draw(st.one_of(hostile_value, st.just([]), st.just([{}])))
        elif kind == "whole":
            body = draw(hostile_value)
    valid = v2_valid(body, model) and not has_surrogate(body)
    versioned = draw(st.integers(0, 4)) == 0
    path = f"/v2/models/{seg(model)}" + ("/versions/1.0.0" if versioned else "")
    if draw(st.integers(0, 9)) == 0:  # a hostile model name (or version) in the path
        name = draw(hostile_text)
        if name not in MODELS:
            path = f"/v2/models/{seg(name)}"
            valid, _ = False, why.append("path name")
    route = "POST /v2/models/{name}" + ("/versions/{version}" if versioned else "") + "/infer"
    return Req(route, "POST", path + "/infer", body=body, header_cid=draw(header_values),
               valid=valid, why=",".join(why), utf8_raw=draw(st.booleans()))


name_segment = st.one_of(st.sampled_from(MODELS), hostile_text,
                         st.sampled_from(["..", ".", "%", "a" * 300, "ghost"]))
GET_ROUTES = ["/health", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready",
              "/v2/models/{name}", "/v2/models/{name}/ready",
              "/v2/models/{name}/versions/{version}",
              "/v2/models/{name}/versions/{version}/ready", "/openapi.json", "/docs",
              "/redoc"]


@st.composite
def get_req(draw: Any) -> Req:
    """Every GET route, with hostile path segments, query strings and header ids."""
    which = draw(st.sampled_from(GET_ROUTES))
    name = draw(name_segment)
    version = draw(st.one_of(st.just("1.0.0"), hostile_text))
    path = which.replace("{name}", seg(name)).replace("{version}", seg(version))
    if draw(st.booleans()):
        path += "?" + draw(st.sampled_from(["version=9", "x=%ED%A0%80", "a=" + "b" * 500,
                                            "%ff=1", "name=ghost"]))
    valid = None
    if "{name}" in which:
        valid = name in MODELS and ("{version}" not in which or version == "1.0.0")
    return Req(f"GET {which}", "GET", path, header_cid=draw(header_values), valid=valid)


@st.composite
def reload_req(draw: Any) -> Req:
    """POST /reload/{model_name}: hostile names; a real one only now and then (it really
    reloads the folder)."""
    if draw(st.integers(0, 19)) == 0:
        name = draw(st.sampled_from(MODELS))
    else:
        name = draw(st.one_of(hostile_text, st.sampled_from(["..", "%2e%2e", "a" * 300])))
    return Req("POST /reload/{model_name}", "POST", f"/reload/{seg(name)}",
               header_cid=draw(header_values), valid=name in MODELS, raw=b"")


# --- sending and judging ---------------------------------------------------------------


@dataclass
class Stats:
    inputs: Counter = field(default_factory=Counter)
    fivexx: Counter = field(default_factory=Counter)
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    invalid: Counter = field(default_factory=Counter)

    def problem(self, kind: str, req: Req, detail: str) -> None:
        lst = self.problems[kind]
        body = req.content()
        lst.append(f"{req.method} {req.path[:80]} body={body[:200] if body else None!r} "
                   f"hdr={req.header_cid[:40] if req.header_cid else None!r} "
                   f"mutated={req.why[:60]!r}: {detail[:300]}")


def _nonfinite(x: Any) -> bool:
    if x is None:
        return True
    if type(x) is float:
        return not math.isfinite(x)
    if type(x) is list:
        return any(_nonfinite(v) for v in x)
    if type(x) is dict:
        return any(_nonfinite(v) for v in x.values())
    return False


def _answers(doc: Any) -> list[Any]:
    """The numbers of a 2xx prediction answer that must be finite."""
    out = []
    for p in doc if type(doc) is list else [doc]:
        if "outputs" in p:
            out += [o["data"] for o in p["outputs"]]
        else:
            out.append(p["prediction"])
            if p["confidence"] is not None or p["probabilities"] is not None:
                out += [p["confidence"], p["probabilities"]]
    return out


def judge(client: httpx.Client, req: Req, stats: Stats) -> None:
    stats.inputs[req.route] += 1
    stats.invalid[req.route] += req.valid is False
    headers = {"content-type": "application/json"}
    if req.header_cid is not None:
        headers["x-correlation-id"] = req.header_cid  # type: ignore[assignment]
    try:
        r = client.request(req.method, req.path, content=req.content(), headers=headers)
    except httpx.HTTPError as exc:
        stats.problem("transport error (reset/closed/timeout)", req, repr(exc))
        return
    stats.statuses[req.route][r.status_code] += 1
    if req.header_cid is not None and any(b < 0x20 and b != 0x09 or b == 0x7F
                                          for b in req.header_cid):
        # not a valid HTTP field value (RFC 9110): uvicorn's parser refuses the request
        # with its own plain-text 400 before the application sees it
        if r.status_code != 400:
            stats.problem("invalid header byte not refused", req, str(r.status_code))
        return
    path = req.path.split("?")[0]
    health_503 = r.status_code == 503 and "health" in path
    if r.status_code >= 500 and not health_503:
        stats.fivexx[req.route] += 1
        stats.problem("5xx", req, f"{r.status_code} {r.text[:200]!r}")
        return
    if r.status_code >= 400:
        if not path.startswith(("/docs", "/redoc")) and not health_503:
            problem = error_shape_problem(path, r.status_code, r.headers, r.content)
            if problem:
                stats.problem("error body/header shape", req, f"{r.status_code}: {problem}")
        if req.valid:
            stats.problem("valid input refused", req, f"{r.status_code} {r.text[:200]}")
        return
    cid = r.headers.get("x-correlation-id")
    if cid is None or not CORRELATION_ID_RE.fullmatch(cid):
        stats.problem("X-Correlation-ID missing/invalid on a 2xx", req, repr(cid)[:80])
    if req.valid is False:
        stats.problem("invalid input answered 2xx", req, f"{r.status_code} {r.text[:200]}")
        return
    if (req.method == "POST" and not path.startswith("/reload")
            and any(_nonfinite(v) for v in _answers(r.json()))):
        stats.problem("non-finite/null number in a 2xx answer", req, r.text[:300])


def run_route(client: httpx.Client, strategy: Any, n: int, stats: Stats, rng_seed: int) -> None:
    # No shrinking and no example database: every generated input is sent once and judged;
    # failures are collected (a count per kind), not raised at the first one.
    @seed(rng_seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(req: Req) -> None:
        judge(client, req, stats)

    run()


def test_fuzz_every_route(zoo_server, soak: bool) -> None:
    scale = 10 if soak else 1
    rng_seed = int(os.environ.get("N1V1_FUZZ_SEED") or time.time_ns() % 1_000_000)
    plan = [(predict_req(), 300), (batch_req(), 200), (v2_infer_req(), 300), (get_req(), 150),
            (reload_req(), 40)]
    stats = Stats()
    started = time.perf_counter()
    with httpx.Client(base_url=zoo_server.url, timeout=30) as client:
        for strategy, n in plan:
            run_route(client, strategy, n * scale, stats, rng_seed)
    elapsed = time.perf_counter() - started
    total, k5 = sum(stats.inputs.values()), sum(stats.fivexx.values())
    print(f"\nfuzz: {total} inputs, {k5} 5xx ({elapsed:.1f} s; N1V1_FUZZ_SEED={rng_seed} "
          f"repeats this run)")
    for route in sorted(stats.inputs):
        codes = " ".join(f"{c}:{k}" for c, k in sorted(stats.statuses[route].items()))
        print(f"fuzz: {route}: {stats.inputs[route]} inputs ({stats.invalid[route]} invalid),"
              f" {stats.fivexx[route]} 5xx [{codes}]")
    for kind, examples in stats.problems.items():
        print(f"fuzz: {kind}: {len(examples)}")
        for ex in examples[:6]:
            print(f"    {ex}")
    dump = os.environ.get("N1V1_FUZZ_DUMP")  # a file for every problem, not only the first
    if dump:
        with open(dump, "w") as fh:
            for kind, examples in stats.problems.items():
                fh.writelines(f"{kind}\t{ex}\n" for ex in examples)
    assert total >= sum(n for _, n in plan) * scale * 0.9, "hypothesis generated too few inputs"
    assert not stats.problems, "; ".join(f"{k}: {len(v)}" for k, v in stats.problems.items())
