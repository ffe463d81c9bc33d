"""From a parsed request body to a response dict: the one code path the server's
routes and the client's local mode share, so both give identical answers.

Pure functions of (LoadedModel, body): no I/O, no globals. Validation is hand-written
(not pydantic) because it runs on every request; errors are InvalidInputError (422)
with messages that name the offending fields or features.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from serving_runtime.errors import BadRequestError, InvalidInputError, ModelNotFoundError, echo
from serving_runtime.models.features import (
    FLOAT32_MAX,
    NUMERIC_TYPES,
    check_feature_names,
    columns_to_matrix,
    finite_or_raise,
    in_float32_range,
    name_list,
)
from serving_runtime.models.folder import LoadedModel
from serving_runtime.models.runtimes.base import Explanation

_PREDICT_FIELDS = frozenset(("model_name", "features", "correlation_id"))
_BATCH_FIELDS = frozenset(("requests", "batch_size"))
# The correlation id rule: what may be echoed in the X-Correlation-ID response header
# (and in a body's correlation_id). Anything else could break or forge a header line, or
# blow up a log line; an id of this shape fits every tracing system's id.
MAX_CORRELATION_ID_LENGTH = 128
CORRELATION_ID_PATTERN = rf"[A-Za-z0-9._:-]{{1,{MAX_CORRELATION_ID_LENGTH}}}"
_CORRELATION_ID_RE = re.compile(CORRELATION_ID_PATTERN)
CORRELATION_ID_RULE = f"1 to {MAX_CORRELATION_ID_LENGTH} characters from A-Z a-z 0-9 . _ : -"
# V2 request ids are the protocol's free text: echoed in the body (not in the header unless
# they also fit the correlation id rule), so only bounded and printable.
MAX_V2_ID_LENGTH = 256
_first = itemgetter(0)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def valid_correlation_id(value: Any) -> bool:
    """True if `value` may be echoed as X-Correlation-ID (CORRELATION_ID_RULE)."""
    return type(value) is str and _CORRELATION_ID_RE.fullmatch(value) is not None


def accepted_correlation_id(value: str | None) -> str | None:
    """A request's X-Correlation-ID if it follows the rule, else None: a rejected header
    is not echoed anywhere, the answer carries a freshly generated id instead."""
    return value if value is not None and _CORRELATION_ID_RE.fullmatch(value) else None


def parse_json(raw: bytes) -> Any:
    """orjson first (fast); on failure the stdlib parser, which also reads the NaN /
    Infinity literals Python's json.dumps writes, so those get a 422 naming the feature
    instead of a vague 400. Anything else unparseable is a 400 — including strings with a
    lone UTF-16 surrogate escape (`"\\ud800"`), which orjson refuses and the stdlib
    accepts: such a string is not Unicode text, could not be echoed back as JSON, and
    means the sender's encoder is broken."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: nesting deeper than either parser goes (orjson stops at 1024)
            raise BadRequestError(f"malformed JSON body: {exc}") from None
        if _has_surrogate(doc):
            raise BadRequestError(
                f"malformed JSON body: {exc}; strings must be valid Unicode (a \\uD800-"
                f"\\uDFFF escape needs its high/low pair)") from None
        return doc


def _has_surrogate(doc: Any) -> bool:
    """Whether any string (key or value) of a parsed document holds a lone surrogate.
    Only on the stdlib fallback path (NaN literals, big integers, surrogates)."""
    stack = [doc]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is str:
            if not x.isascii():
                try:
                    x.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif t is dict:
            stack.extend(x.keys())
            stack.extend(x.values())
        elif t is list:
            stack.extend(x)
    return False


def _require_object(body: Any, what: str) -> dict[str, Any]:
    if type(body) is not dict:
        kind = "array" if isinstance(body, list) else type(body).__name__
        raise InvalidInputError(f"{what} must be a JSON object, got {kind}")
    return body


def model_name_of(body: Any) -> str:
    """The `model_name` of a /predict body (checked before the model is looked up)."""
    body = _require_object(body, "request body")
    name = body.get("model_name")
    if type(name) is not str or not name:
        if "model_name" not in body:
            raise InvalidInputError("missing field 'model_name'")
        raise InvalidInputError("'model_name' must be a non-empty string")
    return name


def body_correlation_id(body: dict[str, Any], fallback: str | None) -> str:
    """The body's correlation_id (refused, 422, outside the rule), else `fallback`, else new."""
    cid = body.get("correlation_id")
    if cid is None:
        return fallback or new_correlation_id()
    if not valid_correlation_id(cid):
        raise InvalidInputError(
            f"'correlation_id' must be a non-empty string of {CORRELATION_ID_RULE} (it is "
            f"echoed in the X-Correlation-ID header); this answer carries a new id"
        )
    return cid


@dataclass(slots=True)
class PreparedPredict:
    """A validated /predict request: the matrix to predict and who asked."""

    model: LoadedModel
    X: np.ndarray
    correlation_id: str
    started: float

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]


@dataclass(slots=True)
class PreparedGroup:
    """Consecutive requests of a batch for one model, their rows stacked in `X`: request k
    owns rows `offsets[k]:offsets[k + 1]` and is answered with `correlation_ids[k]`."""

    model: LoadedModel
    X: np.ndarray
    correlation_ids: list[str]
    offsets: list[int]
    started: float

    @property
    def n_requests(self) -> int:
        return len(self.correlation_ids)

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]


def prepare_predict(
    model: LoadedModel, body: Any, *, correlation_id: str | None = None
) -> PreparedPredict:
    """Validate a /predict body against `model`. `correlation_id` (e.g. from the
    X-Correlation-ID header) is used when the body has none; else one is generated."""
    started = time.perf_counter()
    body = _require_object(body, "request body")
    if len(body) > 3 or not _PREDICT_FIELDS.issuperset(body):
        extra = sorted(k for k in body if k not in _PREDICT_FIELDS)
        raise InvalidInputError(
            f"unknown fields in request body: {name_list(extra)} (allowed: model_name, "
            f"features, correlation_id)"
        )
    if "features" not in body:
        raise InvalidInputError("missing field 'features'")
    cid = body_correlation_id(body, correlation_id)
    X = columns_to_matrix(body["features"], model.feature_names, model.feature_index)
    return PreparedPredict(model, X, cid, started)


def format_outputs(
    model: LoadedModel, labels: np.ndarray, proba: np.ndarray | None
) -> dict[str, Any]:
    """prediction / confidence / probabilities (the last two null without probabilities)."""
    if proba is None or model.class_keys is None:
        return {"prediction": labels.tolist(), "confidence": None, "probabilities": None}
    return {
        "prediction": labels.tolist(),
        "confidence": proba.max(axis=1).tolist(),
        "probabilities": {k: proba[:, i].tolist() for i, k in enumerate(model.class_keys)},
    }


def run_predict(prepared: PreparedPredict) -> dict[str, Any]:
    """Predict a prepared request; the response dict of /predict."""
    model = prepared.model
    labels, proba = model.predict(prepared.X)
    return answer(prepared, labels, proba)


def run_predict_keeping_outputs(
    prepared: PreparedPredict,
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray | None], float]:
    """run_predict, also returning the raw outputs and the model call's seconds (a shadow
    compares its own outputs with these instead of predicting the champion again)."""
    t0 = time.perf_counter()
    labels, proba = prepared.model.predict(prepared.X)
    seconds = time.perf_counter() - t0
    return answer(prepared, labels, proba), (labels, proba), seconds


def answer(prepared: PreparedPredict, labels: np.ndarray,
           proba: np.ndarray | None) -> dict[str, Any]:
    """The /predict response dict of a prepared request's outputs."""
    model = prepared.model
    out = format_outputs(model, labels, proba)
    out["correlation_id"] = prepared.correlation_id
    out["model_version"] = model.version
    out["latency_ms"] = (time.perf_counter() - prepared.started) * 1000.0
    return out


def predict_from_body(
    model: LoadedModel, body: Any, *, correlation_id: str | None = None
) -> dict[str, Any]:
    """A parsed /predict body -> the /predict response dict (see DESIGN.md's wire format).

    The caller has looked `model` up by `model_name_of(body)`. Raises InvalidInputError
    (422) naming the offending fields/features. `correlation_id` stands for the
    X-Correlation-ID header: one outside the id rule is replaced, not refused, as there."""
    return run_predict(prepare_predict(model, body,
                                       correlation_id=accepted_correlation_id(correlation_id)))


# --- /predict/batch --------------------------------------------------------------------


def prepare_batch(
    get_model: Callable[[str], LoadedModel], body: Any, *, correlation_id: str | None = None
) -> tuple[list[PreparedGroup], int | None]:
    """Validate a /predict/batch body; `get_model` raises ModelNotFoundError.
    Errors name the failing request's index (`requests[3]: ...`). Consecutive requests for
    the same model come back as one group (one model call in `run_batch`)."""
    body = _require_object(body, "request body")
    extra = sorted(k for k in body if k not in _BATCH_FIELDS)
    if extra:
        raise InvalidInputError(
            f"unknown fields in batch body: {name_list(extra)} (allowed: requests, batch_size)"
        )
    reqs = body.get("requests")
    if type(reqs) is not list or not reqs:
        raise InvalidInputError("'requests' must be a non-empty list of predict requests")
    batch_size = body.get("batch_size")
    # JSON Schema's integer includes 2.0 and 1e2 (the OpenAPI document says integer, and
    # clients that send every number as a double send those); a bool is not one.
    if type(batch_size) is float and batch_size.is_integer():
        batch_size = int(batch_size)
    if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
        raise InvalidInputError("'batch_size' must be a positive integer")
    correlation_id = accepted_correlation_id(correlation_id)  # as the server's header
    groups = _prepare_uniform(get_model, reqs, correlation_id)
    if groups is None:
        groups = group_requests(_prepare_each(get_model, reqs, correlation_id))
    return groups, batch_size


def group_requests(prepared: list[PreparedPredict]) -> list[PreparedGroup]:
    """Consecutive requests for the same model, stacked."""
    groups: list[PreparedGroup] = []
    i = 0
    while i < len(prepared):
        j = i + 1
        while j < len(prepared) and prepared[j].model is prepared[i].model:
            j += 1
        run = prepared[i:j]
        offsets = [0]
        for p in run:
            offsets.append(offsets[-1] + p.n_rows)
        X = run[0].X if len(run) == 1 else np.concatenate([p.X for p in run])
        groups.append(PreparedGroup(run[0].model, X, [p.correlation_id for p in run], offsets,
                                    run[0].started))
        i = j
    return groups


def _prepare_each(
    get_model: Callable[[str], LoadedModel], reqs: list[Any], correlation_id: str | None
) -> list[PreparedPredict]:
    """Request by request, with the failing request's index in the error."""
    prepared = []
    for i, req in enumerate(reqs):
        try:
            model = get_model(model_name_of(req))
            # Sub-requests without their own id get "<batch id>-<index>", traceable to the call.
            sub_cid = f"{correlation_id}-{i}" if correlation_id else None
            prepared.append(prepare_predict(model, req, correlation_id=sub_cid))
        except (InvalidInputError, ModelNotFoundError) as exc:
            exc.message = f"requests[{i}]: {exc.message}"
            exc.args = (exc.message,)
            raise
    return prepared


def _prepare_uniform(
    get_model: Callable[[str], LoadedModel], reqs: list[Any], correlation_id: str | None
) -> list[PreparedGroup] | None:
    """The common batch (every request one row for the same model, nothing unusual)
    validated as one matrix: about half the cost of request by request (measured 680 -> ~300 us
    for 64 XGB-100 requests), because the type and finiteness checks run once, in C, over
    all values. Returns None at the first surprise; the per-request path then validates
    again and names the failing request, so errors and results are the same either way."""
    started = time.perf_counter()
    first = reqs[0]
    name = first.get("model_name") if type(first) is dict else None
    if type(name) is not str or not name:
        return None
    try:
        model = get_model(name)
    except ModelNotFoundError:
        return None
    names = model.feature_names
    n = len(names)
    if n == 0:
        return None
    pick = itemgetter(*names) if n > 1 else (lambda f, k=names[0]: (f[k],))
    cols: list[Any] = []
    extend = cols.extend
    cids: list[str | None] = []
    for req in reqs:
        if type(req) is not dict or req.get("model_name") != name:
            return None
        feats = req.get("features")
        if type(feats) is not dict or len(feats) != n:
            return None
        size = len(req)
        if size == 2:
            cids.append(None)
        elif size == 3:
            cid = req.get("correlation_id")
            if not valid_correlation_id(cid):
                return None
            cids.append(cid)
        else:
            return None
        try:
            extend(pick(feats))  # all n names present and len == n: exactly the model's keys
        except KeyError:
            return None
    # Every column must be a one-element list of a finite number (bool is not a number).
    # Each pass over the values costs ~17 ns a value here, so the checks are folded: taking
    # element 0 fails on empty lists, objects and scalars; a string or a nested list yields
    # a non-number; with every length >= 1, a total of one per column means exactly one.
    try:
        values = list(map(_first, cols))
    except (IndexError, KeyError, TypeError):
        return None
    if sum(map(len, cols)) != len(cols) or not NUMERIC_TYPES.issuperset(map(type, values)):
        return None
    try:
        X = np.array(values, dtype=np.float64).reshape(len(reqs), n)
    except OverflowError:
        return None
    if not in_float32_range(X):
        return None
    prefix = f"{correlation_id}-" if correlation_id else None
    ids = [cid or (f"{prefix}{i}" if prefix else new_correlation_id())
           for i, cid in enumerate(cids)]
    return [PreparedGroup(model, X, ids, list(range(len(ids) + 1)), started)]


def run_batch(groups: list[PreparedGroup], batch_size: int | None) -> list[dict[str, Any]]:
    """Predict a validated batch: one model call per group of at most `batch_size` requests
    (a tree ensemble costs about the same for 64 rows as for 1); rows are independent, so
    results equal one-by-one calls."""
    out: list[dict[str, Any]] = []
    for g in groups:
        n = g.n_requests
        limit = batch_size or n
        for first in range(0, n, limit):
            last = min(n, first + limit)
            row0 = g.offsets[first]
            labels, proba = g.model.predict(g.X[row0:g.offsets[last]])
            out += _split_outputs(g, first, last, row0, labels, proba)
    return out


def _split_outputs(g: PreparedGroup, first: int, last: int, row0: int, labels: np.ndarray,
                   proba: np.ndarray | None) -> list[dict[str, Any]]:
    """The /predict responses of requests first..last-1 of `g` from one model call over
    their rows: the group's outputs become lists once and are sliced per request (the same
    values as format_outputs on each slice, without a few small numpy calls per request)."""
    model = g.model
    label_l = labels.tolist()
    with_proba = proba is not None and model.class_keys is not None
    if with_proba:
        assert proba is not None
        conf_l = proba.max(axis=1).tolist()
        cols = [(k, proba[:, i].tolist()) for i, k in enumerate(model.class_keys or ())]
    version = model.version
    latency_ms = (time.perf_counter() - g.started) * 1000.0
    offsets, ids = g.offsets, g.correlation_ids
    out = []
    for k in range(first, last):
        a, b = offsets[k] - row0, offsets[k + 1] - row0
        if with_proba:
            res = {"prediction": label_l[a:b], "confidence": conf_l[a:b],
                   "probabilities": {key: c[a:b] for key, c in cols}}
        else:
            res = {"prediction": label_l[a:b], "confidence": None, "probabilities": None}
        res["correlation_id"] = ids[k]
        res["model_version"] = version
        res["latency_ms"] = latency_ms
        out.append(res)
    return out


def predict_batch_from_body(
    get_model: Callable[[str], LoadedModel], body: Any, *, correlation_id: str | None = None
) -> list[dict[str, Any]]:
    """A parsed /predict/batch body -> the list of /predict responses."""
    prepared, batch_size = prepare_batch(get_model, body, correlation_id=correlation_id)
    return run_batch(prepared, batch_size)


# --- Open Inference Protocol v2 --------------------------------------------------------

V2_OUTPUT_PREDICT = "predict"
V2_OUTPUT_PROBA = "predict_proba"
#: parameter of the predict_proba output: its columns' class keys (the /predict
#: probabilities keys), as a JSON list
V2_CLASSES_PARAMETER = "classes"
#: the TreeSHAP output (docs/explanations.md), on request only
V2_OUTPUT_CONTRIBUTIONS = "contributions"
# The datatypes a tree model takes and the values each admits: integers within the type's
# range (an integral JSON number such as 3.0 counts), BOOL true/false (as 0/1), floats
# within the type's range. Whatever the datatype, the values then meet the float32 rule of
# every feature value (serving_runtime.models.features). BYTES: no tree model here takes text.
_V2_INT_RANGES = {
    "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1), "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1),
}
_V2_FLOAT_MAX: dict[str, float | None] = {"FP16": 65504.0, "FP32": FLOAT32_MAX, "FP64": None}
_V2_SUPPORTED = frozenset(("BOOL", *_V2_INT_RANGES, *_V2_FLOAT_MAX))
_V2_SUPPORTED_TEXT = "FP64, FP32, FP16, INT8..INT64, UINT8..UINT64 or BOOL"
_V2_REQUEST_FIELDS = frozenset(("id", "parameters", "inputs", "outputs"))
V2_MAX_DIMS = 8  # also bounds math.prod(shape): a million-dimension shape is not a tensor
_INT_ONLY = frozenset((int,))
_BOOL_ONLY = frozenset((bool,))
_JSON_WORDS = {True: "true", False: "false", None: "null"}


def _show(value: Any) -> str:
    """A request value in a message, as JSON would spell the scalars, kept short."""
    if type(value) is bool or value is None:
        return _JSON_WORDS[value]
    return echo(repr(value), 40)


def _dims(data: Any) -> list[int]:
    """The nesting of `data` along its first elements, for messages."""
    dims = []
    while type(data) is list:
        dims.append(len(data))
        data = data[0] if data else None
    return dims


def _v2_flat(name: str, shape: list[int], data: list[Any]) -> list[Any]:
    """Row-major values of `data`, which V2 allows flat or nested; nested data must have
    exactly the declared shape (a [1, 12] nesting is not a [2, 6] tensor)."""
    if not data or type(data[0]) is not list:
        return data  # flat (a list further on is a non-numeric value, refused later)
    level = [data]
    for size in shape:
        nxt: list[Any] = []
        for x in level:
            if type(x) is not list or len(x) != size:
                raise InvalidInputError(
                    f"input '{name}': data is nested as {_dims(data)} but shape is {shape}")
            nxt.extend(x)
        level = nxt
    if list in set(map(type, level)):
        raise InvalidInputError(f"input '{name}': data is nested deeper than shape {shape}")
    return level


def _v2_input(inp: Any, i: int) -> tuple[str, list[int], str, list[Any]]:
    """(name, shape, datatype, flat values) of one request input, its structure checked:
    the values themselves are checked against the datatype by `_v2_values`."""
    if type(inp) is not dict:
        raise InvalidInputError(f"inputs[{i}] must be an object with name, shape, datatype, data")
    name = inp.get("name")
    if type(name) is not str or not name:
        raise InvalidInputError(f"inputs[{i}]: 'name' must be a non-empty string")
    shown = echo(name)
    shape = inp.get("shape")
    if (type(shape) is not list or not 0 < len(shape) <= V2_MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise InvalidInputError(
            f"input '{shown}': 'shape' must be a list of non-negative integers (1 to "
            f"{V2_MAX_DIMS} dimensions)")
    datatype = inp.get("datatype")
    if type(datatype) is not str:
        raise InvalidInputError(
            f"input '{shown}': 'datatype' must be a string ({_V2_SUPPORTED_TEXT}), got "
            f"{_show(datatype)}")
    if datatype not in _V2_SUPPORTED:
        raise InvalidInputError(
            f"input '{shown}': datatype {echo(datatype, 40)!r} is not supported; tabular "
            f"models take numeric tensors ({_V2_SUPPORTED_TEXT})"
        )
    params = inp.get("parameters")
    if params is not None and type(params) is not dict:
        raise InvalidInputError(f"input '{shown}': 'parameters' must be an object")
    data = inp.get("data")
    if type(data) is not list:
        raise InvalidInputError(f"input '{shown}': 'data' must be a list")
    flat = _v2_flat(shown, shape, data)
    size = math.prod(shape)
    if len(flat) != size:
        raise InvalidInputError(
            f"input '{shown}': shape {shape} needs {size} values, data has {len(flat)}")
    return name, shape, datatype, flat


def _v2_values(name: str, datatype: str, flat: list[Any],
               feature_of: Callable[[int], str]) -> list[Any]:
    """`flat` checked against `datatype` (numbers for the matrix; BOOL as 0/1). Messages
    name the input, the value, its index and (`feature_of(index)`) its feature."""
    types = set(map(type, flat))
    if datatype == "BOOL":
        if not _BOOL_ONLY.issuperset(types):
            k = next(k for k, v in enumerate(flat) if type(v) is not bool)
            raise InvalidInputError(
                f"input '{name}': datatype BOOL takes true/false; got {_show(flat[k])} at "
                f"index {k}{feature_of(k)}")
        return list(map(int, flat))
    if datatype in _V2_INT_RANGES:
        lo, hi = _V2_INT_RANGES[datatype]
        if not _INT_ONLY.issuperset(types):
            for k, v in enumerate(flat):
                if type(v) is not int and not (
                        type(v) is float and math.isfinite(v) and v.is_integer()):
                    raise InvalidInputError(
                        f"input '{name}': datatype {datatype} takes integers; got {_show(v)} "
                        f"at index {k}{feature_of(k)}")
        if flat and (min(flat) < lo or max(flat) > hi):
            k, v = next((k, v) for k, v in enumerate(flat) if not lo <= v <= hi)
            raise InvalidInputError(
                f"input '{name}': value {_show(v)} at index {k}{feature_of(k)} is out of range "
                f"for datatype {datatype} ({lo}..{hi})")
        return flat
    if not NUMERIC_TYPES.issuperset(types):
        k, v = next((k, v) for k, v in enumerate(flat) if type(v) not in NUMERIC_TYPES)
        raise InvalidInputError(
            f"non-numeric values in input '{name}' (datatype {datatype} takes numbers; got "
            f"{_show(v)} at index {k}{feature_of(k)})")
    limit = _V2_FLOAT_MAX[datatype]
    if limit is not None and flat:
        try:
            ok = np.abs(np.array(flat, dtype=np.float64)) <= limit  # NaN: False
        except OverflowError:  # an integer beyond float64
            ok = np.array([abs(v) <= limit for v in flat])
        if not ok.all():
            k = int(np.flatnonzero(~ok)[0])
            raise InvalidInputError(
                f"input '{name}': value {_show(flat[k])} at index {k}{feature_of(k)} is out "
                f"of range for datatype {datatype} (a finite number of magnitude at most "
                f"{limit!r})")
    return flat


def _v2_matrix(model: LoadedModel, inputs: Any) -> np.ndarray:
    if type(inputs) is not list or not inputs:
        raise InvalidInputError("'inputs' must be a non-empty list of tensors")
    parsed = [_v2_input(inp, i) for i, inp in enumerate(inputs)]
    n = model.n_features
    names = model.feature_names
    expects = name_list(list(names))
    by_feature = len(parsed) > 1 or parsed[0][0] in model.feature_index and len(parsed[0][1]) == 1
    if not by_feature:
        name, shape, datatype, flat = parsed[0]
        shown = echo(name)
        if len(shape) != 2 or shape[1] != n:
            raise InvalidInputError(
                f"input '{shown}' has shape {shape}; the model takes one input of shape "
                f"[rows, {n}] with columns in this order: {expects}, or one input per feature "
                f"named by feature name"
            )
        if shape[0] == 0:
            raise InvalidInputError(f"empty input: input '{shown}' has no rows")
        flat = _v2_values(shown, datatype, flat, lambda k: f" (feature {echo(names[k % n])})")
        try:
            X = np.array(flat, dtype=np.float64).reshape(shape[0], n)
        except OverflowError:
            X = None
        if X is None or not in_float32_range(X):
            cols = [flat[j::n] for j in range(n)]
            return finite_or_raise(None, cols, names)  # raises: X is None or out of range
        return X
    got = [p[0] for p in parsed]
    if len(set(got)) != len(got):
        raise InvalidInputError("duplicate input names")
    check_feature_names(got, names, model.feature_index, what="inputs")
    columns: dict[str, list[Any]] = {}
    for name, shape, datatype, flat in parsed:
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInputError(
                f"input '{name}' has shape {shape}; a per-feature input has shape [rows] or "
                f"[rows, 1]"
            )
        columns[name] = _v2_values(name, datatype, flat, lambda k: "")
    return columns_to_matrix(columns, names, model.feature_index)


def _v2_tensor(name: str, arr: np.ndarray) -> dict[str, Any]:
    kind = arr.dtype.kind
    if kind == "f":
        datatype = "FP32" if arr.dtype == np.float32 else "FP64"
    elif kind in "iu":
        datatype = "INT64"
    elif kind == "b":
        datatype = "BOOL"
    else:
        datatype = "BYTES"
    data = arr.reshape(-1).tolist()
    if datatype == "BYTES":
        data = [str(x) for x in data]
    shape = list(arr.shape) if arr.ndim > 1 else [arr.shape[0], 1]
    return {"name": name, "shape": shape, "datatype": datatype, "data": data,
            "parameters": {"content_type": "np"}}


def infer_v2(
    model: LoadedModel, body: Any, *, request_id: str | None = None
) -> dict[str, Any]:
    """A parsed V2 inference request -> the V2 inference response dict.

    Outputs as MLServer's sklearn/xgboost runtimes give them: `predict` (default) and,
    for classifiers, `predict_proba` ([rows, n_classes] in class order)."""
    body = _require_object(body, "request body")
    extra = sorted(k for k in body if k not in _V2_REQUEST_FIELDS)
    if extra:
        raise InvalidInputError(f"unknown fields in inference request: {name_list(extra)}")
    rid = body.get("id")
    if rid is not None and (type(rid) is not str or len(rid) > MAX_V2_ID_LENGTH
                            or not rid.isprintable()):
        raise InvalidInputError(
            f"'id' must be a string of at most {MAX_V2_ID_LENGTH} printable characters")
    params = body.get("parameters")
    if params is not None and type(params) is not dict:
        raise InvalidInputError("'parameters' must be an object")
    wanted = [V2_OUTPUT_PREDICT]
    outputs = body.get("outputs")
    if outputs is not None:
        if type(outputs) is not list or not all(
            type(o) is dict and type(o.get("name")) is str for o in outputs
        ):
            raise InvalidInputError("'outputs' must be a list of objects with a 'name'")
        for k, o in enumerate(outputs):
            if o.get("parameters") is not None and type(o["parameters"]) is not dict:
                raise InvalidInputError(f"outputs[{k}]: 'parameters' must be an object")
        if outputs:
            wanted = [o["name"] for o in outputs]
    available = ([V2_OUTPUT_PREDICT] + ([V2_OUTPUT_PROBA] if model.has_proba else [])
                 + [V2_OUTPUT_CONTRIBUTIONS])
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise InvalidInputError(
            f"unknown outputs: {name_list(unknown)}; model {model.name} has: "
            f"{', '.join(available)}"
        )
    X = _v2_matrix(model, body.get("inputs"))
    labels, proba = model.predict(X)
    tensors = []
    for w in wanted:
        if w == V2_OUTPUT_CONTRIBUTIONS:
            tensors.append(_v2_contributions(model, model.explain(X)))
            continue
        arr = labels if w == V2_OUTPUT_PREDICT else proba
        if arr is None:  # has_proba promised probabilities: a runtime bug, not the request's
            raise RuntimeError(f"model {model.name} returned no probabilities")
        tensor = _v2_tensor(w, arr)
        if w == V2_OUTPUT_PROBA and model.class_keys is not None:
            # which column is which class: a JSON list (V2 parameters hold scalars only)
            tensor["parameters"][V2_CLASSES_PARAMETER] = orjson.dumps(
                list(model.class_keys)).decode()
        tensors.append(tensor)
    return {
        "model_name": model.name,
        "model_version": model.version,
        "id": rid or request_id or new_correlation_id(),
        "parameters": {},
        "outputs": tensors,
    }


def _v2_contributions(model: LoadedModel, e: Explanation) -> dict[str, Any]:
    """The `contributions` output: per row (and output), each feature's contribution and
    the base value last, as XGBoost's pred_contribs: [rows, features + 1] for one output,
    [rows, outputs, features + 1] for several."""
    rows = e.contributions.shape[0]
    full = np.concatenate(
        [np.moveaxis(e.contributions, 2, 1),
         np.broadcast_to(e.base[None, :, None], (rows, len(e.base), 1))], axis=2)
    if full.shape[1] == 1:
        full = full[:, 0, :]
    tensor = _v2_tensor(V2_OUTPUT_CONTRIBUTIONS, full)
    tensor["parameters"].update({
        "output": e.output,
        "features": orjson.dumps([*model.feature_names, "base_value"]).decode(),
        "outputs": orjson.dumps(_explained_keys(model, e)).decode()})
    return tensor


def _explained_keys(model: LoadedModel, e: Explanation) -> list[str]:
    if e.classes is None or model.class_keys is None:
        return ["value"]
    return [model.class_keys[c] for c in e.classes]


def run_explain(prepared: PreparedPredict) -> dict[str, Any]:
    """A prepared /predict request explained: the /explain response dict."""
    model = prepared.model
    e = model.explain(prepared.X)
    names = model.feature_names
    out: dict[str, Any] = {
        "output": e.output,
        "explanations": {
            key: {"base_value": float(e.base[k]),
                  "contributions": {f: e.contributions[:, j, k].tolist()
                                    for j, f in enumerate(names)}}
            for k, key in enumerate(_explained_keys(model, e))},
        "correlation_id": prepared.correlation_id,
        "model_version": model.version,
    }
    out["latency_ms"] = (time.perf_counter() - prepared.started) * 1000.0
    return out


def model_metadata_v2(model: LoadedModel) -> dict[str, Any]:
    """`GET /v2/models/{name}`."""
    if model.task == "regression":
        label_type = "FP64"
    elif all(type(c) is int for c in model.classes or ()):
        label_type = "INT64"
    else:
        label_type = "BYTES"
    outputs = [{"name": V2_OUTPUT_PREDICT, "datatype": label_type, "shape": [-1, 1]}]
    if model.has_proba and model.classes is not None:
        outputs.append({"name": V2_OUTPUT_PROBA, "datatype": "FP64",
                        "shape": [-1, len(model.classes)]})
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.framework,
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, model.n_features]}],
        "outputs": outputs,
        "parameters": {"feature_names": list(model.feature_names), "task": model.task},
    }
