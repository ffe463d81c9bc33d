"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on GRPC_PORT.

Every RPC is answered by the REST handlers (`HotHandlers`, `ControlHandlers`): a
`ModelInferRequest` becomes the V2 JSON body (serving_runtime.grpc_protocol), so
validation, its messages, metrics, canary/shadow routing and correlation ids are the REST
path's. It runs in each worker's event loop beside uvicorn, and it sheds with the hot
path's verdict (`HotPathApp.overloaded`). Status mapping, REST -> gRPC:
400/422 INVALID_ARGUMENT, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE,
500 INTERNAL. The correlation id travels as `x-correlation-id` metadata both ways (the
answer's in the trailing metadata); a challenger version is pinned with `x-model-version`.

AUTH_TOKENS_DIR: every RPC needs `authorization: Bearer <token>` metadata (else
UNAUTHENTICATED; ServerLive and ServerReady follow AUTH_HEALTH), checked by an interceptor
with the HTTP port's Authenticator (`start` takes it as a required argument and refuses
None when AUTH_TOKENS_DIR is set: the port cannot end up open by omission).
TLS_CERT_FILE/TLS_KEY_FILE: the port serves TLS with the same pair, watched by its own
`tls.PemPair` (PEM bytes only: grpc builds its own TLS state from them); grpc's dynamic
credentials ask for the pair at each new handshake, so a rotated certificate is served
without a restart, as on the HTTP port.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from serving_runtime import grpc_protocol as pb
from serving_runtime.schemas import MODEL_VERSION_HEADER
from serving_runtime.server import auth
from serving_runtime.server import tls as tls_mod
from serving_runtime.server.control import ControlHandlers
from serving_runtime.server.handlers import Reply
from serving_runtime.server.settings import Settings

log = logging.getLogger("serving_runtime.server.grpc")

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 422: grpc.StatusCode.INVALID_ARGUMENT,
          503: grpc.StatusCode.UNAVAILABLE}
_CID = "x-correlation-id"
_PIN = MODEL_VERSION_HEADER.lower()


def status_code(http_status: int) -> grpc.StatusCode:
    return _CODES.get(http_status, grpc.StatusCode.INTERNAL)


def _metadata(context: aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else None
    return None


class InferenceService:
    """The six RPCs; `overload` is the hot-path app (None: never shed)."""

    def __init__(self, control: ControlHandlers, overload: Any = None) -> None:
        self.control = control
        self.hot = control.hot
        self.overload = overload

    async def _answer(self, context: aio.ServicerContext, reply: Reply,
                      ok: Callable[[Any], Any]) -> Any:
        if reply.correlation_id:
            context.set_trailing_metadata(((_CID, reply.correlation_id),))
        if reply.status == 200:
            return ok(reply.content)
        content = reply.content if type(reply.content) is dict else {}
        await context.abort(status_code(reply.status),
                            content.get("error") or content.get("detail") or "request failed")

    async def ServerLive(self, request: Any, context: aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: aio.ServicerContext) -> Any:
        reply = await self.control.v2_ready("")
        return pb.ServerReadyResponse(ready=bool(reply.content["ready"]))

    async def ServerMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        doc = (await self.control.v2_server_metadata("")).content
        return pb.ServerMetadataResponse(name=doc["name"], version=doc["version"],
                                         extensions=doc["extensions"])

    async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:
        reply = self.control.model_ready("", request.name,
                                                          request.version or None)
        if reply.status == 503 and "ready" in reply.content:  # loading or draining: an
            return pb.ModelReadyResponse(ready=False)  # answer, not an error
        return await self._answer(context, reply,
                                  lambda doc: pb.ModelReadyResponse(ready=doc["ready"]))

    async def ModelMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        reply = self.control.model_metadata("", request.name,
                                                             request.version or None)
        return await self._answer(context, reply, pb.metadata_to_proto)

    async def ModelInfer(self, request: Any, context: aio.ServicerContext) -> Any:
        cid = _metadata(context, _CID)
        overload = self.overload
        if overload is not None and overload.overloaded():
            overload.shed_total += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, overload.shed_message())

        async def load() -> dict[str, Any]:
            return pb.request_to_v2(request)

        reply = await self.hot.v2_infer_body(load, cid, request.model_name,
                                             request.model_version or None,
                                             _metadata(context, _PIN))
        raw = bool(request.raw_input_contents)
        return await self._answer(context, reply, lambda out: pb.v2_to_response(out, raw=raw))


def _handlers(service: InferenceService) -> grpc.GenericRpcHandler:
    def unary(name: str) -> grpc.RpcMethodHandler:
        req_cls, resp_cls = pb.METHODS[name]
        fn: Callable[[Any, aio.ServicerContext], Awaitable[Any]] = getattr(service, name)
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=req_cls.FromString,
            response_serializer=resp_cls.SerializeToString)

    return grpc.method_handlers_generic_handler(pb.SERVICE, {n: unary(n) for n in pb.METHODS})


#: the RPCs AUTH_HEALTH=open leaves open
HEALTH_METHODS = frozenset(f"/{pb.SERVICE}/{m}" for m in ("ServerLive", "ServerReady"))


def _refusal(failure: auth.Failure) -> grpc.RpcMethodHandler:
    message = auth.MESSAGE[failure]

    async def refuse(request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message,
                            trailing_metadata=(("www-authenticate", auth.CHALLENGE[failure]),))

    # no deserializer: the refused request is never parsed
    return grpc.unary_unary_rpc_method_handler(refuse)


class AuthInterceptor(aio.ServerInterceptor):
    """UNAUTHENTICATED for an RPC without an accepted `authorization: Bearer` token."""

    def __init__(self, authenticator: auth.Authenticator, health_open: bool) -> None:
        self.auth = authenticator
        self.open_methods = HEALTH_METHODS if health_open else frozenset()
        self._refusals = {f: _refusal(f) for f in (auth.MISSING, auth.INVALID)}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method not in self.open_methods:
            header = None
            for key, value in handler_call_details.invocation_metadata or ():
                if key == "authorization":
                    header = value if isinstance(value, str) else value.decode("latin-1")
                    break
            failure = self.auth.check(header)
            if failure is not None:
                return self._refusals[failure]
        return await continuation(handler_call_details)


def server_credentials(tls: tls_mod.PemPair) -> grpc.ServerCredentials:
    """TLS credentials that follow `tls`'s reloads: grpc calls the fetcher at each new
    handshake, and it hands over the pair only when a reload brought a new one."""
    served = [tls.generation]
    lock = threading.Lock()  # grpc may call the fetcher from several threads at once

    def pair_config() -> Any:
        cert, key = tls.pem
        return grpc.ssl_server_certificate_configuration([(key, cert)])

    def fetch() -> Any:
        with lock:
            tls.maybe_reload()  # bounded: looks at the files every few seconds at most
            if tls.generation == served[0]:
                return None  # unchanged: grpc keeps the current pair
            served[0] = tls.generation
            return pair_config()

    return grpc.dynamic_ssl_server_credentials(pair_config(), fetch,
                                               require_client_authentication=False)


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(settings: Settings, control: ControlHandlers, overload: Any = None, *,
                authenticator: auth.Authenticator | None) -> aio.Server | None:
    """The started gRPC server, or None when GRPC_PORT is 0. Raises RuntimeError naming
    the address when the port cannot be bound. `authenticator` (the app's, from
    AUTH_TOKENS_DIR; required, None only without AUTH_TOKENS_DIR: ValueError otherwise)
    guards every RPC; TLS_CERT_FILE/TLS_KEY_FILE make the port a TLS one."""
    if settings.grpc_port == 0:
        return None
    if authenticator is None and settings.auth_tokens_dir is not None:
        raise ValueError("gRPC: AUTH_TOKENS_DIR is set but no authenticator was given; "
                         "the port would serve without authentication")
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
        # Workers share the port (the kernel spreads connections); one process alone must
        # not share it, so a second server on the same port is an error, not a silent split.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    interceptors = ([AuthInterceptor(authenticator, settings.auth_health == "open")]
                    if authenticator is not None else [])
    server = aio.server(options=options, interceptors=interceptors)
    server.add_generic_rpc_handlers((_handlers(InferenceService(control, overload)),))
    address = listen_address(settings.host, settings.grpc_port)
    # its own watcher of the pair (the HTTP port's lives in the uvicorn server)
    tls = tls_mod.pem_pair(settings)
    try:
        if tls is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, server_credentials(tls))
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC: cannot listen on {address} (GRPC_PORT): {exc}") from exc
    await server.start()
    log.info("gRPC listening", extra={"address": address, "tls": tls is not None,
                                      "auth": authenticator is not None})
    return server


__all__ = ["AuthInterceptor", "InferenceService", "listen_address", "server_credentials",
           "start", "status_code"]
