"""Remote mode: HTTP to a runtime over pooled keep-alive connections.

The sync and async transports share one decision function (`_decide`), so retries,
error mapping and correlation ids behave identically in both. Retried: connection
failures (refused, reset, closed before answering) and 503, at most `policy.retries`
times. Never retried: 4xx (the same body would fail again), other 5xx, and read timeouts
(the time budget is spent; retrying would multiply the caller's worst-case latency).
Predictions are pure, so re-sending a request that may have reached the server is safe.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from serving_runtime.models.inference import valid_correlation_id

from .errors import (
    InferenceTimeoutError,
    ServerError,
    ServiceUnavailableError,
    error_for_status,
    message_from_body,
)
from .retry import RetryPolicy

USER_AGENT = "n1v1-serving-client/0.1.0"
CORRELATION_HEADER = "X-Correlation-ID"
_RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


def model_path(prefix: str, model_name: str) -> str:
    return f"{prefix}/{quote(model_name, safe='')}"


def _client_options(url: str, timeout: float, max_connections: int,
                    transport: Any) -> dict[str, Any]:
    """What the blocking and the asyncio httpx clients are built with."""
    return {
        "base_url": url,
        "timeout": timeout,
        "limits": httpx.Limits(max_connections=max_connections,
                               max_keepalive_connections=max_connections,
                               keepalive_expiry=60.0),
        "headers": {"User-Agent": USER_AGENT},
        "transport": transport,
    }


def _headers(content: bytes | None, correlation_id: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if content is not None:
        headers["Content-Type"] = "application/json"
    # Only an id the server may echo goes in the header (its correlation id rule); any
    # other stays in the body, where the server refuses it with a 422 as local mode does
    # (an id outside latin-1 could not even be sent as a header).
    if correlation_id and valid_correlation_id(correlation_id):
        headers[CORRELATION_HEADER] = correlation_id
    return headers


def _raise_for(resp: httpx.Response, correlation_id: str | None) -> None:
    try:
        body: Any = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        body = resp.text
    message = message_from_body(body, f"HTTP {resp.status_code} {resp.reason_phrase}")
    cid = resp.headers.get(CORRELATION_HEADER) or correlation_id
    raise error_for_status(resp.status_code, message, correlation_id=cid)


class _Retry(Exception):
    """Internal: wait `delay` seconds and try again."""

    def __init__(self, delay: float) -> None:
        self.delay = delay


def _decide(
    policy: RetryPolicy,
    attempt: int,
    where: str,
    timeout: float,
    correlation_id: str | None,
    resp: httpx.Response | None = None,
    exc: Exception | None = None,
    accept: frozenset[int] = frozenset(),
) -> Any:
    """Return the decoded body, raise `_Retry`, or raise the typed error."""
    last = attempt + 1 >= policy.attempts
    if exc is not None:
        if isinstance(exc, _RETRYABLE):
            if not last:
                raise _Retry(policy.delay(attempt))
            raise ServiceUnavailableError(
                f"cannot reach {where} after {policy.attempts} attempts "
                f"({type(exc).__name__}: {exc or 'connection failed'})",
                correlation_id=correlation_id,
            ) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise InferenceTimeoutError(
                f"no answer from {where} within {timeout:g}s", correlation_id=correlation_id
            ) from exc
        if isinstance(exc, httpx.HTTPError):
            raise ServerError(f"{where}: {type(exc).__name__}: {exc}",
                              correlation_id=correlation_id) from exc
        raise exc
    assert resp is not None
    if resp.status_code == 503 and not last and resp.status_code not in accept:
        raise _Retry(policy.delay(attempt, resp.headers.get("Retry-After")))
    if resp.is_success or resp.status_code in accept:
        return orjson.loads(resp.content)
    _raise_for(resp, correlation_id)


class RemoteTransport:
    """Blocking transport; one instance per engine process is enough (it is thread-safe)."""

    def __init__(
        self,
        url: str,
        timeout: float,
        policy: RetryPolicy,
        *,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.policy = policy
        self._http = httpx.Client(**_client_options(self.url, timeout, max_connections,
                                                    transport))

    def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        correlation_id: str | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Any:
        headers = _headers(content, correlation_id)
        where = f"{self.url}{path}"
        for attempt in range(self.policy.attempts):
            try:
                try:
                    resp = self._http.request(method, path, content=content, headers=headers)
                except httpx.HTTPError as exc:
                    return _decide(self.policy, attempt, where, self.timeout, correlation_id,
                                   exc=exc)
                return _decide(self.policy, attempt, where, self.timeout, correlation_id,
                               resp=resp, accept=accept)
            except _Retry as retry:
                time.sleep(retry.delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        self._http.close()


class AsyncRemoteTransport:
    """asyncio transport for engines running an event loop."""

    def __init__(
        self,
        url: str,
        timeout: float,
        policy: RetryPolicy,
        *,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.policy = policy
        self._http = httpx.AsyncClient(**_client_options(self.url, timeout, max_connections,
                                                         transport))

    async def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        correlation_id: str | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Any:
        headers = _headers(content, correlation_id)
        where = f"{self.url}{path}"
        for attempt in range(self.policy.attempts):
            try:
                try:
                    resp = await self._http.request(
                        method, path, content=content, headers=headers
                    )
                except httpx.HTTPError as exc:
                    return _decide(self.policy, attempt, where, self.timeout, correlation_id,
                                   exc=exc)
                return _decide(self.policy, attempt, where, self.timeout, correlation_id,
                               resp=resp, accept=accept)
            except _Retry as retry:
                await asyncio.sleep(retry.delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        await self._http.aclose()
