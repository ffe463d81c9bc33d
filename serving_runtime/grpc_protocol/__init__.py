"""The Open Inference Protocol over gRPC: messages, and their mapping to the V2 JSON shapes.

One module for both sides, as `serving_runtime.schemas` is for REST: the server
(`server/grpc_server.py`) turns a `ModelInferRequest` into the V2 JSON body the REST route
takes, so validation and its messages are the REST path's, word for word; the engine's
client (`client/grpc_remote.py`) does the reverse.

The messages come from `inference.binpb` (compiled from `inference.proto` by
scripts/gen_grpc_descriptor.py) in a private descriptor pool, not protobuf's default one:
tritonclient and the KServe SDK register the same `inference.*` names there, and a process
may import both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from serving_runtime.errors import InvalidInputError, echo

SERVICE = "inference.GRPCInferenceService"
_POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(
        (Path(__file__).with_name("inference.binpb")).read_bytes()).file:
    _POOL.Add(_file)


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")

#: rpc name -> (request class, response class)
METHODS: dict[str, tuple[Any, Any]] = {
    "ServerLive": (ServerLiveRequest, ServerLiveResponse),
    "ServerReady": (ServerReadyRequest, ServerReadyResponse),
    "ModelReady": (ModelReadyRequest, ModelReadyResponse),
    "ServerMetadata": (ServerMetadataRequest, ServerMetadataResponse),
    "ModelMetadata": (ModelMetadataRequest, ModelMetadataResponse),
    "ModelInfer": (ModelInferRequest, ModelInferResponse),
}

# datatype -> (InferTensorContents field, little-endian numpy dtype of its raw bytes)
_TYPED: dict[str, tuple[str | None, str]] = {
    "BOOL": ("bool_contents", "?"),
    "INT8": ("int_contents", "<i1"), "INT16": ("int_contents", "<i2"),
    "INT32": ("int_contents", "<i4"), "INT64": ("int64_contents", "<i8"),
    "UINT8": ("uint_contents", "<u1"), "UINT16": ("uint_contents", "<u2"),
    "UINT32": ("uint_contents", "<u4"), "UINT64": ("uint64_contents", "<u8"),
    "FP16": (None, "<f2"),  # raw only: the protocol has no typed field for it
    "FP32": ("fp32_contents", "<f4"), "FP64": ("fp64_contents", "<f8"),
}
_CONTENT_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents",
                   "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents")


def parameters_to_dict(params: Any) -> dict[str, Any]:
    """A `map<string, InferParameter>` as the JSON object V2 REST would carry."""
    return {k: getattr(v, v.WhichOneof("parameter_choice"))
            for k, v in params.items() if v.WhichOneof("parameter_choice")}


def _set_parameters(target: Any, params: dict[str, Any] | None) -> None:
    for k, v in (params or {}).items():
        p = target[k]
        if type(v) is bool:
            p.bool_param = v
        elif type(v) is int:
            if v > 2**63 - 1:
                p.uint64_param = v
            else:
                p.int64_param = v
        elif type(v) is float:
            p.double_param = v
        elif type(v) is str:
            p.string_param = v
        else:
            raise InvalidInputError(
                f"parameter '{echo(k)}': gRPC parameters are booleans, integers, numbers or "
                f"strings")


def _raw_values(name: str, datatype: str, shape: list[int], raw: bytes) -> list[Any]:
    if datatype not in _TYPED:  # BYTES and unknown names: the REST check says which
        return []
    dtype = np.dtype(_TYPED[datatype][1])
    size = math.prod(shape)
    if len(raw) != size * dtype.itemsize:
        raise InvalidInputError(
            f"input '{echo(name)}': shape {shape} of {datatype} needs {size * dtype.itemsize} "
            f"bytes of raw_input_contents, got {len(raw)}")
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return values


def _typed_values(name: str, datatype: str, contents: Any) -> list[Any]:
    used = [f for f in _CONTENT_FIELDS if len(getattr(contents, f))]
    if not used:
        return []
    field = _TYPED.get(datatype, (None, ""))[0]
    if field is None or used != [field]:
        raise InvalidInputError(
            f"input '{echo(name)}' of datatype {echo(datatype, 40)} carries "
            f"{' and '.join(used)}; its values go in "
            + (f"contents.{field}" if field else "raw_input_contents" if datatype in _TYPED
               else "a datatype this runtime takes (numeric, BOOL)"))
    return list(getattr(contents, field))


def request_to_v2(req: Any) -> dict[str, Any]:
    """A `ModelInferRequest` as the V2 JSON inference body (model name and version are the
    caller's: they are the REST path's). Only the encoding is checked here: shapes,
    datatypes and values are checked by the same code as a REST body."""
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs; with "
            f"raw contents every input has exactly one")
    inputs = []
    for k, t in enumerate(req.inputs):
        shape = list(t.shape)
        if any(d < 0 for d in shape):
            raise InvalidInputError(f"input '{echo(t.name)}': negative dimension in {shape}")
        if raw:
            if t.HasField("contents") and any(len(getattr(t.contents, f))
                                              for f in _CONTENT_FIELDS):
                raise InvalidInputError(
                    f"input '{echo(t.name)}' has both contents and raw_input_contents")
            data = _raw_values(t.name, t.datatype, shape, raw[k])
        else:
            data = _typed_values(t.name, t.datatype, t.contents)
        inp: dict[str, Any] = {"name": t.name, "shape": shape, "datatype": t.datatype,
                               "data": data}
        if t.parameters:
            inp["parameters"] = parameters_to_dict(t.parameters)
        inputs.append(inp)
    body: dict[str, Any] = {"inputs": inputs}
    if req.id:
        body["id"] = req.id
    if req.parameters:
        body["parameters"] = parameters_to_dict(req.parameters)
    if req.outputs:
        body["outputs"] = [{"name": o.name} for o in req.outputs]
    return body


def _bytes_element(v: Any) -> bytes:
    return v.encode() if type(v) is str else bytes(v)


def v2_to_response(out: dict[str, Any], *, raw: bool) -> Any:
    """A V2 JSON inference response as a `ModelInferResponse`: raw_output_contents when
    `raw` (what tritonclient reads), else typed contents."""
    resp = ModelInferResponse(model_name=out["model_name"],
                              model_version=out.get("model_version") or "",
                              id=out.get("id") or "")
    _set_parameters(resp.parameters, out.get("parameters"))
    for t in out["outputs"]:
        o = resp.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        _set_parameters(o.parameters, t.get("parameters"))
        data, datatype = t["data"], t["datatype"]
        if datatype == "BYTES":
            items = [_bytes_element(v) for v in data]
            if raw:  # Triton's layout: each element as a 4-byte little-endian length + bytes
                resp.raw_output_contents.append(
                    b"".join(len(b).to_bytes(4, "little") + b for b in items))
            else:
                o.contents.bytes_contents.extend(items)
        elif raw:
            resp.raw_output_contents.append(
                np.asarray(data, dtype=_TYPED[datatype][1]).tobytes())
        else:
            getattr(o.contents, _TYPED[datatype][0] or "fp32_contents").extend(data)
    return resp


def response_to_v2(resp: Any) -> dict[str, Any]:
    """A `ModelInferResponse` as the V2 JSON response (for the engine's client)."""
    outputs = []
    for k, o in enumerate(resp.outputs):
        shape = list(o.shape)
        if k < len(resp.raw_output_contents):
            buf = resp.raw_output_contents[k]
            if o.datatype == "BYTES":
                data, at = [], 0
                while at < len(buf):
                    n = int.from_bytes(buf[at:at + 4], "little")
                    data.append(buf[at + 4:at + 4 + n].decode())
                    at += 4 + n
            else:
                data = np.frombuffer(buf, dtype=_TYPED[o.datatype][1]).tolist()
        elif o.datatype == "BYTES":
            data = [b.decode() for b in o.contents.bytes_contents]
        else:
            data = list(getattr(o.contents, _TYPED[o.datatype][0] or "fp32_contents"))
        outputs.append({"name": o.name, "datatype": o.datatype, "shape": shape, "data": data})
    return {"model_name": resp.model_name, "model_version": resp.model_version,
            "id": resp.id, "parameters": parameters_to_dict(resp.parameters),
            "outputs": outputs}


def v2_to_request(body: dict[str, Any], model_name: str, *, raw: bool = True) -> Any:
    """A V2 JSON inference body as a `ModelInferRequest` (for the engine's client): raw
    little-endian contents by default, as tritonclient sends."""
    req = ModelInferRequest(model_name=model_name, id=body.get("id") or "")
    _set_parameters(req.parameters, body.get("parameters"))
    for t in body["inputs"]:
        i = req.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        field, dtype = _TYPED[t["datatype"]]
        flat = np.asarray(t["data"], dtype=dtype).ravel()
        if raw or field is None:
            req.raw_input_contents.append(flat.tobytes())
        else:
            getattr(i.contents, field).extend(flat.tolist())
    for o in body.get("outputs") or ():
        req.outputs.add(name=o["name"])
    return req


def metadata_to_proto(doc: dict[str, Any]) -> Any:
    """`GET /v2/models/{name}`'s document as a `ModelMetadataResponse`."""
    resp = ModelMetadataResponse(name=doc["name"], versions=doc.get("versions") or [],
                                 platform=doc.get("platform") or "")
    for key in ("inputs", "outputs"):
        for t in doc.get(key) or ():
            getattr(resp, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
    return resp


__all__ = [
    "METHODS", "SERVICE", "metadata_to_proto", "parameters_to_dict", "request_to_v2",
    "response_to_v2", "v2_to_request", "v2_to_response",
]
