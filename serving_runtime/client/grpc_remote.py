"""Remote mode over gRPC: `REMOTE_INFERENCE_URL=grpc://host:8081` (the runtime's GRPC_PORT).

`predict` sends one `ModelInfer` with one FP64 input per feature (raw little-endian, as
tritonclient sends) and asks for `predict` and, for classifiers, `predict_proba`; the
answer is turned back into the /predict result: the same prediction, probabilities and
confidence values as REST and local mode. Differences, by design: `latency_ms` is the
round trip this client measured (the protocol carries no server time); `health()` and
`reload()` are REST-only calls and raise. Retries follow the REST transport's rule:
UNAVAILABLE (a refused or broken connection, a shed or loading server) is retried up to
the policy's attempts, nothing else; a deadline is never retried.

`grpcs://host:port` speaks TLS, verified against `ca_file` or the system roots (a
`ca_file` with grpc:// is a ValueError, as with http://); a token (`TokenSource`) travels
as `authorization: Bearer <token>` metadata, and UNAUTHENTICATED raises
AuthenticationError, never retried. A certificate that does not verify (grpc reports it as
UNAVAILABLE, with the handshake's reason in the details) raises TLSVerificationError, never
retried, as over REST.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
from grpc import aio

from serving_runtime import grpc_protocol as pb
from serving_runtime.errors import InvalidInputError, ServingError
from serving_runtime.models.inference import (
    V2_CLASSES_PARAMETER,
    V2_OUTPUT_CONTRIBUTIONS,
    V2_OUTPUT_PREDICT,
    V2_OUTPUT_PROBA,
    valid_correlation_id,
)
from serving_runtime.schemas import ExplainResult, PredictResult

from .errors import (
    InferenceTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TLSVerificationError,
    error_for_status,
)
from .remote import TokenSource, authentication_error, check_url_security
from .retry import RetryPolicy

SCHEME = "grpc://"
TLS_SCHEME = "grpcs://"
_CID = "x-correlation-id"
_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 422, grpc.StatusCode.NOT_FOUND: 404,
                grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.UNAVAILABLE: 503,
                grpc.StatusCode.INTERNAL: 500}
_OPTIONS = [("grpc.max_receive_message_length", -1),
            ("grpc.keepalive_time_ms", 30_000)]  # a dead pod shows without a request


def is_grpc_url(url: str) -> bool:
    return url.startswith((SCHEME, TLS_SCHEME))


def target_of(url: str) -> str:
    """`grpc://host:port` (or grpcs://) -> `host:port`."""
    prefix = TLS_SCHEME if url.startswith(TLS_SCHEME) else SCHEME
    rest = url[len(prefix):].rstrip("/")
    if not url.startswith(prefix) or not rest or "/" in rest:
        raise ValueError(f"a gRPC URL is grpc://host:port or grpcs://host:port, got {url!r}")
    return rest


def channel_credentials(url: str, ca_file: str | Path | None) -> grpc.ChannelCredentials | None:
    """TLS credentials for a grpcs:// URL; None: plaintext (grpc://; check_url_security
    has refused a CA file with it)."""
    if not url.startswith(TLS_SCHEME):
        return None
    roots = Path(ca_file).read_bytes() if ca_file is not None else None
    return grpc.ssl_channel_credentials(root_certificates=roots)


def open_channel(api: Any, url: str, tokens: TokenSource | None,
                 ca_file: str | Path | None) -> Any:
    """A channel of `api` (grpc, or grpc.aio) to `url`: TLS for grpcs://, after the URL's
    security check (a CA file with grpc:// is a ValueError; a token in clear warns)."""
    check_url_security(url, tokens, ca_file)
    creds = channel_credentials(url, ca_file)
    if creds is None:
        return api.insecure_channel(target_of(url), options=_OPTIONS)
    return api.secure_channel(target_of(url), creds, options=_OPTIONS)


def _column(values: Any) -> np.ndarray | None:
    """The values as float64, or None when they are not all numbers (strings, None, ...:
    numpy would read "5.1" as 5.1, which the server never does)."""
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged nesting
        return None
    if arr.dtype.kind not in "biuf":
        return None
    return arr.astype(np.float64).reshape(-1)


def infer_request(model_name: str, features: Mapping[str, Any], correlation_id: str,
                  outputs: list[str]) -> Any:
    """The `ModelInferRequest` of a /predict call: one FP64 input per feature. Refused
    here, with /predict's words: no columns, and values that are not numbers."""
    if not isinstance(features, Mapping):
        raise InvalidInputError("'features' must be an object of feature name -> values")
    if not features:
        raise InvalidInputError("'features' has no columns")
    columns = {str(k): _column(v) for k, v in features.items()}
    bad = [k for k, v in columns.items() if v is None]
    if bad:
        raise InvalidInputError(f"non-numeric values in features: {', '.join(bad)}")
    body = {"id": correlation_id,
            "inputs": [{"name": k, "shape": [len(v), 1], "datatype": "FP64", "data": v}
                       for k, v in columns.items() if v is not None],
            "outputs": [{"name": o} for o in outputs]}
    return pb.v2_to_request(body, model_name)


def _request(model_name: str, features: Mapping[str, Any], cid: str,
             outputs: list[str]) -> Any:
    try:
        return infer_request(model_name, features, cid, outputs)
    except ServingError as exc:
        exc.correlation_id = cid  # type: ignore[attr-defined]  # as the server's errors
        raise


def wanted_outputs(metadata: Any) -> list[str]:
    """predict, and predict_proba when the model (its ModelMetadata) has it."""
    have = {o.name for o in metadata.outputs}
    return [V2_OUTPUT_PREDICT] + ([V2_OUTPUT_PROBA] if V2_OUTPUT_PROBA in have else [])


def predict_result(resp: Any, correlation_id: str, seconds: float) -> PredictResult:
    out = {o["name"]: o for o in pb.response_to_v2(resp)["outputs"]}
    labels = out[V2_OUTPUT_PREDICT]["data"]
    proba = out.get(V2_OUTPUT_PROBA)
    probabilities = confidence = None
    if proba is not None:
        (params,) = [o.parameters for o in resp.outputs if o.name == V2_OUTPUT_PROBA]
        keys = orjson.loads(params[V2_CLASSES_PARAMETER].string_param)
        m = np.asarray(proba["data"], dtype=np.float64).reshape(proba["shape"])
        probabilities = {k: m[:, i].tolist() for i, k in enumerate(keys)}
        confidence = m.max(axis=1).tolist()
    return {"prediction": labels, "confidence": confidence, "probabilities": probabilities,
            "correlation_id": correlation_id, "model_version": resp.model_version,
            "latency_ms": seconds * 1000.0}


def _method(channel: Any, name: str) -> Any:
    req_cls, resp_cls = pb.METHODS[name]
    return channel.unary_unary(f"/{pb.SERVICE}/{name}",
                               request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)


def explain_result(resp: Any, correlation_id: str, seconds: float) -> ExplainResult:
    """The `contributions` output as the /explain result."""
    (tensor,) = [o for o in resp.outputs if o.name == V2_OUTPUT_CONTRIBUTIONS]
    params = pb.parameters_to_dict(tensor.parameters)
    features = orjson.loads(params["features"])[:-1]
    keys = orjson.loads(params["outputs"])
    (out,) = [o for o in pb.response_to_v2(resp)["outputs"]
              if o["name"] == V2_OUTPUT_CONTRIBUTIONS]
    m = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
    if m.ndim == 2:
        m = m[:, None, :]
    return {"output": params["output"],
            "explanations": {key: {"base_value": float(m[0, k, -1]),
                                   "contributions": {f: m[:, k, j].tolist()
                                                     for j, f in enumerate(features)}}
                             for k, key in enumerate(keys)},
            "correlation_id": correlation_id, "model_version": resp.model_version,
            "latency_ms": seconds * 1000.0}


#: what grpc's details say when the handshake failed on the server's certificate ("Tls
#: (or Ssl) handshake failed (TSI_PROTOCOL_FAILURE): ... CERTIFICATE_VERIFY_FAILED:
#: certificate has expired", "Peer name x is not in peer certificate"); lower case. A
#: handshake cut short otherwise (a pod going away mid-handshake) stays retryable.
_TLS_FAILURE_MARKS = ("certificate_verify_failed", "certificate verify failed",
                      "not in peer certificate")


def tls_failure(details: str) -> bool:
    """Whether an UNAVAILABLE's details say the server's certificate did not verify."""
    text = details.lower()
    return any(mark in text for mark in _TLS_FAILURE_MARKS)


class _Retry(Exception):
    def __init__(self, delay: float) -> None:
        self.delay = delay


def _raise(policy: RetryPolicy, attempt: int, where: str, timeout: float,
           exc: grpc.RpcError, correlation_id: str, sent_token: bool = False) -> None:
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.UNAUTHENTICATED:  # never retried: the same token again
        raise authentication_error(details, sent_token, where, correlation_id) from exc
    if code == grpc.StatusCode.UNAVAILABLE and tls_failure(details):
        # a handshake that failed on the certificate: retrying cannot fix it
        raise TLSVerificationError(
            f"{where}: the server's TLS certificate did not verify: {details} (ca_file / "
            f"REMOTE_INFERENCE_CA_FILE names the CA to trust)",
            correlation_id=correlation_id) from exc
    if code == grpc.StatusCode.UNAVAILABLE:
        if attempt + 1 < policy.attempts:
            raise _Retry(policy.delay(attempt)) from exc
        raise ServiceUnavailableError(f"{where}: {details}",
                                      correlation_id=correlation_id) from exc
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise InferenceTimeoutError(f"no answer from {where} within {timeout:g}s",
                                    correlation_id=correlation_id) from exc
    status = _HTTP_STATUS.get(code)
    if status is None:
        raise ServerError(f"{where}: {code.name}: {details}",
                          correlation_id=correlation_id) from exc
    raise error_for_status(status, details, correlation_id=correlation_id) from exc


def _metadata(cid: str, tokens: TokenSource | None = None) -> tuple[tuple[str, str], ...]:
    # only an id the server may echo travels as metadata; the request's `id` carries it too
    md: tuple[tuple[str, str], ...] = ((_CID, cid),) if valid_correlation_id(cid) else ()
    authorization = tokens.header() if tokens is not None else None
    if authorization is not None:
        md += (("authorization", authorization),)
    return md


def _rest_only(what: str) -> ServingError:
    return ServerError(f"{what} is a REST call; this client speaks gRPC ({SCHEME}...): "
                       f"use the runtime's http:// URL for it")


class GrpcTransport:
    """Blocking gRPC transport; thread-safe (one channel, HTTP/2 multiplexed)."""

    def __init__(self, url: str, timeout: float, policy: RetryPolicy, *,
                 tokens: TokenSource | None = None,
                 ca_file: str | Path | None = None) -> None:
        self.url, self.timeout, self.policy, self.tokens = url, timeout, policy, tokens
        self._channel = open_channel(grpc, url, tokens, ca_file)
        self._infer = _method(self._channel, "ModelInfer")
        self._meta = _method(self._channel, "ModelMetadata")
        self._outputs: dict[str, list[str]] = {}  # model -> outputs to ask for

    def _call(self, fn: Any, request: Any, cid: str) -> Any:
        for attempt in range(self.policy.attempts):
            metadata = _metadata(cid, self.tokens)
            try:
                return fn(request, timeout=self.timeout, metadata=metadata)
            except grpc.RpcError as exc:
                try:
                    _raise(self.policy, attempt, self.url, self.timeout, exc, cid,
                           any(k == "authorization" for k, _ in metadata))
                except _Retry as retry:
                    time.sleep(retry.delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def predict(self, model_name: str, features: Mapping[str, Any],
                correlation_id: str) -> PredictResult:
        outputs = self._outputs.get(model_name)
        if outputs is None:  # once per model: is it a classifier?
            meta = self._call(self._meta, pb.ModelMetadataRequest(name=model_name),
                              correlation_id)
            outputs = self._outputs[model_name] = wanted_outputs(meta)
        request = _request(model_name, features, correlation_id, outputs)
        t0 = time.perf_counter()
        resp = self._call(self._infer, request, correlation_id)
        return predict_result(resp, correlation_id, time.perf_counter() - t0)

    def explain(self, model_name: str, features: Mapping[str, Any],
                correlation_id: str) -> ExplainResult:
        request = _request(model_name, features, correlation_id, [V2_OUTPUT_CONTRIBUTIONS])
        t0 = time.perf_counter()
        resp = self._call(self._infer, request, correlation_id)
        return explain_result(resp, correlation_id, time.perf_counter() - t0)

    def rest_only(self, what: str) -> ServingError:
        return _rest_only(what)

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcTransport:
    """asyncio gRPC transport (grpc.aio) for engines running an event loop."""

    def __init__(self, url: str, timeout: float, policy: RetryPolicy, *,
                 tokens: TokenSource | None = None,
                 ca_file: str | Path | None = None) -> None:
        self.url, self.timeout, self.policy, self.tokens = url, timeout, policy, tokens
        self._channel = open_channel(aio, url, tokens, ca_file)
        self._infer = _method(self._channel, "ModelInfer")
        self._meta = _method(self._channel, "ModelMetadata")
        self._outputs: dict[str, list[str]] = {}

    async def _call(self, fn: Any, request: Any, cid: str) -> Any:
        for attempt in range(self.policy.attempts):
            metadata = _metadata(cid, self.tokens)
            try:
                return await fn(request, timeout=self.timeout, metadata=metadata)
            except grpc.RpcError as exc:
                try:
                    _raise(self.policy, attempt, self.url, self.timeout, exc, cid,
                           any(k == "authorization" for k, _ in metadata))
                except _Retry as retry:
                    await asyncio.sleep(retry.delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def predict(self, model_name: str, features: Mapping[str, Any],
                      correlation_id: str) -> PredictResult:
        outputs = self._outputs.get(model_name)
        if outputs is None:
            meta = await self._call(self._meta, pb.ModelMetadataRequest(name=model_name),
                                    correlation_id)
            outputs = self._outputs[model_name] = wanted_outputs(meta)
        request = _request(model_name, features, correlation_id, outputs)
        t0 = time.perf_counter()
        resp = await self._call(self._infer, request, correlation_id)
        return predict_result(resp, correlation_id, time.perf_counter() - t0)

    async def explain(self, model_name: str, features: Mapping[str, Any],
                      correlation_id: str) -> ExplainResult:
        request = _request(model_name, features, correlation_id, [V2_OUTPUT_CONTRIBUTIONS])
        t0 = time.perf_counter()
        resp = await self._call(self._infer, request, correlation_id)
        return explain_result(resp, correlation_id, time.perf_counter() - t0)

    def rest_only(self, what: str) -> ServingError:
        return _rest_only(what)

    async def aclose(self) -> None:
        await self._channel.close()


__all__ = ["SCHEME", "TLS_SCHEME", "AsyncGrpcTransport", "GrpcTransport",
           "channel_credentials", "explain_result", "infer_request", "is_grpc_url",
           "predict_result", "target_of", "tls_failure", "wanted_outputs"]
