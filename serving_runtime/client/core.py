"""`InferenceClient` (blocking) and `AsyncInferenceClient`: one interface, two modes.

Mode, URL, timeout and credentials come from `ClientSettings` (REMOTE_INFERENCE_ENABLED /
_URL / _TIMEOUT / _TOKEN / _TOKEN_FILE / _CA_FILE); constructor arguments override them. A
`grpc://host:port` (TLS: `grpcs://`) URL speaks the Open Inference Protocol over gRPC
(client/grpc_remote.py) instead of HTTP. Every call carries
a correlation id: the caller's, or a fresh uuid4 hex, sent in the body and as
X-Correlation-ID (gRPC: the request id and x-correlation-id) so retries and server logs
share it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from serving_runtime.errors import InvalidInputError
from serving_runtime.schemas import ExplainResult, PredictResult

from .grpc_remote import AsyncGrpcTransport, GrpcTransport, is_grpc_url
from .local import LocalModels
from .remote import AsyncRemoteTransport, RemoteTransport, TokenSource, model_path
from .retry import RetryPolicy
from .settings import ClientSettings
from .wire import batch_body, encode, predict_body

Mode = Literal["local", "remote"]


def _new_correlation_id() -> str:
    return uuid.uuid4().hex


def _predict_request(
    model_name: str, features: Mapping[str, Any], correlation_id: str | None
) -> tuple[str, bytes]:
    """The correlation id (the caller's or a fresh one) and the encoded /predict body."""
    cid = correlation_id if correlation_id is not None else _new_correlation_id()
    return cid, encode(predict_body(model_name, features, cid))


def _batch_calls(requests: Sequence[Mapping[str, Any]],
                 correlation_id: str | None) -> list[tuple[str, Any, str]]:
    """(model, features, correlation id) of each batch request, for gRPC (one ModelInfer
    each); ids as /predict/batch gives them: the request's own, else `<id>-<index>`."""
    cid = correlation_id if correlation_id is not None else _new_correlation_id()
    calls: list[tuple[str, Any, str]] = []
    for i, r in enumerate(requests):
        if not isinstance(r, Mapping) or not isinstance(r.get("model_name"), str):
            raise InvalidInputError(f"requests[{i}]: needs 'model_name' and 'features'")
        calls.append((r["model_name"], r.get("features"), r.get("correlation_id") or f"{cid}-{i}"))
    return calls


def _batch_request(
    requests: Sequence[Mapping[str, Any]], batch_size: int | None, correlation_id: str | None
) -> tuple[str, bytes]:
    """The correlation id (the caller's or a fresh one) and the encoded /predict/batch body."""
    cid = correlation_id if correlation_id is not None else _new_correlation_id()
    return cid, encode(batch_body(requests, batch_size))


class _Config:
    """Settings merged with constructor overrides (shared by both client classes)."""

    def __init__(
        self,
        settings: ClientSettings | None,
        remote: bool | None,
        url: str | None,
        timeout: float | None,
        models_dir: str | Path | None,
        allow_unsafe_loading: bool | None,
        retry: RetryPolicy | None,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        s = settings or ClientSettings()
        self.remote = s.remote_inference_enabled if remote is None else remote
        self.url = url or s.remote_inference_url
        self.timeout = s.remote_inference_timeout if timeout is None else timeout
        self.models_dir = Path(models_dir) if models_dir is not None else s.models_dir
        self.allow_unsafe = (
            s.allow_unsafe_loading if allow_unsafe_loading is None else allow_unsafe_loading
        )
        self.max_body_bytes = s.max_body_bytes
        self.retry = retry or RetryPolicy()
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        # an argument overrides both environment variables (a token= beats a token file
        # from the environment, and the other way round)
        if token is None and token_file is None:
            secret, token_file = s.remote_inference_token, s.remote_inference_token_file
            token = secret.get_secret_value() if secret is not None else None
        self.ca_file = ca_file if ca_file is not None else s.remote_inference_ca_file
        self.tokens = (TokenSource(token, token_file)
                       if self.remote and (token is not None or token_file is not None)
                       else None)

    def transport_options(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "ca_file": self.ca_file}

    def local_models(self, threads: int | None) -> LocalModels:
        return LocalModels(self.models_dir, allow_unsafe=self.allow_unsafe, threads=threads,
                           max_body_bytes=self.max_body_bytes)


def _describe(client: Any, transport: Any) -> str:
    """A client's repr: its mode, URL and whether a token is sent, never the token."""
    name = type(client).__name__
    if transport is None:
        return f"{name}(mode='local')"
    token = "none" if transport.tokens is None else repr(transport.tokens)
    return f"{name}(mode='remote', url={client.url!r}, token={token})"


class InferenceClient:
    """Blocking client; thread-safe, keep one per process (it pools connections).

    Example: ``InferenceClient(remote=True, url="http://iris.models.svc:8000")
    .predict("iris", {"sepal_length": [5.1], "sepal_width": [3.5], ...})["prediction"]``

    `token` / `token_file` send `Authorization: Bearer <token>` (a file is re-read when
    it changes); `ca_file` is the CA an https:// (grpcs://) server is verified against.
    """

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        remote: bool | None = None,
        url: str | None = None,
        timeout: float | None = None,
        models_dir: str | Path | None = None,
        allow_unsafe_loading: bool | None = None,
        retry: RetryPolicy | None = None,
        preload: Sequence[str] = (),
        threads: int | None = None,
        max_connections: int = 64,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        cfg = _Config(settings, remote, url, timeout, models_dir, allow_unsafe_loading, retry,
                      token, token_file, ca_file)
        self.mode: Mode = "remote" if cfg.remote else "local"
        self.url = cfg.url if cfg.remote else None
        self._remote: RemoteTransport | None = None
        self._grpc: GrpcTransport | None = None
        self._local: LocalModels | None = None
        if cfg.remote and is_grpc_url(cfg.url):
            self._grpc = GrpcTransport(cfg.url, cfg.timeout, cfg.retry,
                                       **cfg.transport_options())
        elif cfg.remote:
            self._remote = RemoteTransport(cfg.url, cfg.timeout, cfg.retry,
                                           max_connections=max_connections,
                                           **cfg.transport_options())
        else:
            self._local = cfg.local_models(threads)
            self._local.preload(preload)

    def predict(
        self,
        model_name: str,
        features: Mapping[str, Sequence[float]] | Mapping[str, Any],
        correlation_id: str | None = None,
    ) -> PredictResult:
        """Predict rows given as columns: `{feature name: [value per row]}`."""
        if self._grpc is not None:
            cid = correlation_id if correlation_id is not None else _new_correlation_id()
            return self._grpc.predict(model_name, features, cid)
        cid, raw = _predict_request(model_name, features, correlation_id)
        if self._local is not None:
            return self._local.predict(raw, cid)  # type: ignore[return-value]
        assert self._remote is not None
        return self._remote.request("POST", "/predict", raw, cid)

    def explain(
        self,
        model_name: str,
        features: Mapping[str, Sequence[float]] | Mapping[str, Any],
        correlation_id: str | None = None,
    ) -> ExplainResult:
        """Exact TreeSHAP of the rows `predict` takes: per output (class), the base value
        and each feature's contribution per row (docs/explanations.md)."""
        if self._grpc is not None:
            cid = correlation_id if correlation_id is not None else _new_correlation_id()
            return self._grpc.explain(model_name, features, cid)
        cid, raw = _predict_request(model_name, features, correlation_id)
        if self._local is not None:
            return self._local.explain(raw, cid)  # type: ignore[return-value]
        assert self._remote is not None
        return self._remote.request("POST", "/explain", raw, cid)

    def predict_batch(
        self,
        requests: Sequence[Mapping[str, Any]],
        batch_size: int | None = None,
        correlation_id: str | None = None,
    ) -> list[PredictResult]:
        """Several /predict bodies in one call; answers in the same order. Requests
        without their own correlation id get `<correlation_id>-<index>`."""
        if self._grpc is not None:
            grpc = self._grpc
            return [grpc.predict(m, f, c) for m, f, c in _batch_calls(requests, correlation_id)]
        cid, raw = _batch_request(requests, batch_size, correlation_id)
        if self._local is not None:
            return self._local.predict_batch(raw, cid)  # type: ignore[return-value]
        assert self._remote is not None
        return self._remote.request("POST", "/predict/batch", raw, cid)

    def health(self) -> dict[str, Any]:
        """The runtime's /health view; a degraded server's 503 answer is returned, not
        raised (it is the information asked for)."""
        if self._local is not None:
            return self._local.health()
        if self._grpc is not None:
            raise self._grpc.rest_only("health()")
        assert self._remote is not None
        return self._remote.request("GET", "/health", accept=frozenset({503}))

    def reload(self, model_name: str) -> dict[str, Any]:
        """Hot-reload a model from its folder (`{"message": "Reloading model X"}`)."""
        if self._local is not None:
            return self._local.reload(model_name)
        if self._grpc is not None:
            raise self._grpc.rest_only("reload()")
        assert self._remote is not None
        return self._remote.request("POST", model_path("/reload", model_name))

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
        if self._grpc is not None:
            self._grpc.close()

    def __repr__(self) -> str:
        return _describe(self, self._remote or self._grpc)

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncInferenceClient:
    """asyncio client with the same methods (awaitable) and the same errors.

    Local mode predicts inline on the event loop: a tree-model prediction costs well under
    a millisecond, less than handing it to a thread. Loading and reloading (disk, seconds)
    run in a worker thread.
    """

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        remote: bool | None = None,
        url: str | None = None,
        timeout: float | None = None,
        models_dir: str | Path | None = None,
        allow_unsafe_loading: bool | None = None,
        retry: RetryPolicy | None = None,
        threads: int | None = None,
        max_connections: int = 64,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        cfg = _Config(settings, remote, url, timeout, models_dir, allow_unsafe_loading, retry,
                      token, token_file, ca_file)
        self.mode: Mode = "remote" if cfg.remote else "local"
        self.url = cfg.url if cfg.remote else None
        self._remote: AsyncRemoteTransport | None = None
        self._grpc: AsyncGrpcTransport | None = None
        self._local: LocalModels | None = None
        if cfg.remote and is_grpc_url(cfg.url):
            self._grpc = AsyncGrpcTransport(cfg.url, cfg.timeout, cfg.retry,
                                            **cfg.transport_options())
        elif cfg.remote:
            self._remote = AsyncRemoteTransport(cfg.url, cfg.timeout, cfg.retry,
                                                max_connections=max_connections,
                                                **cfg.transport_options())
        else:
            self._local = cfg.local_models(threads)

    async def preload(self, names: Sequence[str]) -> None:
        if self._local is not None:
            await asyncio.to_thread(self._local.preload, list(names))

    async def _ensure_loaded(self, names: Sequence[Any]) -> None:
        """Load (in a thread) the models a request needs and that have a folder. Unknown
        names are left to the shared code, which raises the server's exact 404 message."""
        assert self._local is not None
        local = self._local
        missing = [n for n in dict.fromkeys(names)
                   if isinstance(n, str) and local.loaded(n) is None and local.has_folder(n)]
        if missing:
            await asyncio.to_thread(local.preload, missing)

    async def predict(
        self,
        model_name: str,
        features: Mapping[str, Sequence[float]] | Mapping[str, Any],
        correlation_id: str | None = None,
    ) -> PredictResult:
        if self._grpc is not None:
            cid = correlation_id if correlation_id is not None else _new_correlation_id()
            return await self._grpc.predict(model_name, features, cid)
        cid, raw = _predict_request(model_name, features, correlation_id)
        if self._local is not None:
            await self._ensure_loaded([model_name])
            return self._local.predict(raw, cid)  # type: ignore[return-value]
        assert self._remote is not None
        return await self._remote.request("POST", "/predict", raw, cid)

    async def explain(
        self,
        model_name: str,
        features: Mapping[str, Sequence[float]] | Mapping[str, Any],
        correlation_id: str | None = None,
    ) -> ExplainResult:
        if self._grpc is not None:
            cid = correlation_id if correlation_id is not None else _new_correlation_id()
            return await self._grpc.explain(model_name, features, cid)
        cid, raw = _predict_request(model_name, features, correlation_id)
        if self._local is not None:
            await self._ensure_loaded([model_name])
            # milliseconds to seconds of numpy work: off the event loop
            return await asyncio.to_thread(self._local.explain, raw, cid)  # type: ignore
        assert self._remote is not None
        return await self._remote.request("POST", "/explain", raw, cid)

    async def predict_batch(
        self,
        requests: Sequence[Mapping[str, Any]],
        batch_size: int | None = None,
        correlation_id: str | None = None,
    ) -> list[PredictResult]:
        if self._grpc is not None:
            grpc = self._grpc  # one HTTP/2 connection: the calls go concurrently
            return list(await asyncio.gather(*(grpc.predict(m, f, c) for m, f, c
                                               in _batch_calls(requests, correlation_id))))
        cid, raw = _batch_request(requests, batch_size, correlation_id)
        if self._local is not None:
            await self._ensure_loaded(
                [r.get("model_name") for r in requests if isinstance(r, Mapping)])
            return self._local.predict_batch(raw, cid)  # type: ignore[return-value]
        assert self._remote is not None
        return await self._remote.request("POST", "/predict/batch", raw, cid)

    async def health(self) -> dict[str, Any]:
        if self._local is not None:
            return self._local.health()
        if self._grpc is not None:
            raise self._grpc.rest_only("health()")
        assert self._remote is not None
        return await self._remote.request("GET", "/health", accept=frozenset({503}))

    async def reload(self, model_name: str) -> dict[str, Any]:
        if self._local is not None:
            return await asyncio.to_thread(self._local.reload, model_name)
        if self._grpc is not None:
            raise self._grpc.rest_only("reload()")
        assert self._remote is not None
        return await self._remote.request("POST", model_path("/reload", model_name))

    async def aclose(self) -> None:
        if self._remote is not None:
            await self._remote.aclose()
        if self._grpc is not None:
            await self._grpc.aclose()

    def __repr__(self) -> str:
        return _describe(self, self._remote or self._grpc)

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
