"""Remote mode: HTTP to a runtime over pooled keep-alive connections.

The sync and async transports share one decision function (`_decide`), so retries,
error mapping and correlation ids behave identically in both. Retried: connection
failures (refused, reset, closed before answering) and 503, at most `policy.retries`
times. Never retried: 4xx (the same body would fail again), other 5xx, and read timeouts
(the time budget is spent; retrying would multiply the caller's worst-case latency).
Predictions are pure, so re-sending a request that may have reached the server is safe.

A runtime with AUTH_TOKENS_DIR wants `Authorization: Bearer <token>`: `TokenSource` gives
it from a string or a file (re-read when the file changes, so a rotated mounted Secret is
picked up without a restart); a 401 raises AuthenticationError, never retried. An https://
URL is verified against the system CAs, or against `ca_file` when given; a certificate
that does not verify raises TLSVerificationError, never retried either. A `ca_file` with
a plaintext URL (http://, grpc://) is a ValueError: it would verify nothing while the
token travels in clear. A token sent over http:// (grpc://) to a host that is not
loopback logs one warning per host (in-cluster plaintext behind a NetworkPolicy is a
legitimate choice, so not an error).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from serving_runtime.files import Stamp, file_stamp
from serving_runtime.models.inference import valid_correlation_id

from .errors import (
    AuthenticationError,
    InferenceTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TLSVerificationError,
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


#: a token file is looked at again (one stat) at most this often
TOKEN_FILE_CHECK_SECONDS = 1.0


class TokenSource:
    """The bearer token to send: `token`, or the content of `token_file` (surrounding
    whitespace stripped), re-read when the file's identity, size or mtime changed (a stat
    at most every TOKEN_FILE_CHECK_SECONDS). Thread-safe; the token is never logged."""

    def __init__(self, token: str | None = None, token_file: str | Path | None = None,
                 *, check_seconds: float = TOKEN_FILE_CHECK_SECONDS) -> None:
        if token is not None and token_file is not None:
            raise ValueError("give a token or a token file, not both")
        if token is not None and not token.strip():
            raise ValueError("the token is empty")
        self.file = Path(token_file) if token_file is not None else None
        self.check_seconds = check_seconds
        self._token = token.strip() if token is not None else None
        self._stamp: Stamp | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        if self.file is not None:
            self._read()  # a missing or empty file is an error now, not at the first call

    def _read(self) -> None:
        assert self.file is not None
        stamp = file_stamp(self.file)
        token = self.file.read_text().strip()
        if not token:
            raise ValueError(f"the token file {self.file} is empty")
        self._token = token
        self._stamp = stamp

    def token(self) -> str | None:
        if self.file is None:
            return self._token
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                self._next_check = now + self.check_seconds
                try:
                    if file_stamp(self.file) != self._stamp:
                        self._read()
                except (OSError, ValueError):
                    pass  # mid-rotation (missing or empty for a moment): keep the last one
        return self._token

    def header(self) -> str | None:
        token = self.token()
        return f"Bearer {token}" if token else None

    def __repr__(self) -> str:  # never the token itself
        return f"TokenSource(file={self.file})" if self.file else "TokenSource(<token>)"


log = logging.getLogger("serving_runtime.client")

#: plaintext scheme -> its TLS counterpart
_SECURE_SCHEME = {"http": "https", "grpc": "grpcs"}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_warned_plaintext: set[str] = set()


def is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url_security(url: str, tokens: TokenSource | None,
                       ca_file: str | Path | None) -> None:
    """ValueError for a CA file with a plaintext URL (it would verify nothing); one
    warning per host (per process) for a token sent in clear to a host off loopback."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    secure = _SECURE_SCHEME.get(scheme)
    if secure is None:
        return
    if ca_file is not None:
        raise ValueError(f"ca_file (or REMOTE_INFERENCE_CA_FILE) given but the URL is "
                         f"{scheme}://; use {secure}:// (a CA file verifies a TLS server, and "
                         f"{scheme}:// is not TLS)")
    host = parts.hostname or ""
    if tokens is None or is_loopback(host):
        return
    where = f"{scheme}://{parts.netloc.rpartition('@')[2]}"
    if where in _warned_plaintext:
        return
    _warned_plaintext.add(where)
    log.warning("a bearer token is sent over plain %s to %s: anyone on the network path "
                "can read it; use %s:// unless the path is otherwise protected (e.g. "
                "in-cluster behind a NetworkPolicy)", f"{scheme}://", where, secure,
                extra={"url": where})


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext | bool:
    """httpx's `verify`: the system CAs (True), or only `ca_file`'s."""
    if ca_file is None:
        return True
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def authentication_error(message: str, sent_token: bool, where: str,
                         correlation_id: str | None) -> AuthenticationError:
    if sent_token:
        text = f"{where}: the server rejected the bearer token ({message})"
    else:
        text = (f"{where}: the server requires a bearer token and none was sent ({message}); "
                f"give token= or token_file= (REMOTE_INFERENCE_TOKEN, "
                f"REMOTE_INFERENCE_TOKEN_FILE)")
    return AuthenticationError(text, correlation_id=correlation_id)


def model_path(prefix: str, model_name: str) -> str:
    return f"{prefix}/{quote(model_name, safe='')}"


def _client_options(url: str, timeout: float, max_connections: int,
                    transport: Any, ca_file: str | Path | None = None) -> dict[str, Any]:
    """What the blocking and the asyncio httpx clients are built with."""
    return {
        "verify": tls_context(ca_file),
        "base_url": url,
        "timeout": timeout,
        "limits": httpx.Limits(max_connections=max_connections,
                               max_keepalive_connections=max_connections,
                               keepalive_expiry=60.0),
        "headers": {"User-Agent": USER_AGENT},
        "transport": transport,
    }


def _headers(content: bytes | None, correlation_id: str | None,
             tokens: TokenSource | None = None) -> dict[str, str]:
    headers: dict[str, str] = {}
    authorization = tokens.header() if tokens is not None else None
    if authorization is not None:
        headers["Authorization"] = authorization
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
    sent_token: bool = False,
) -> Any:
    """Return the decoded body, raise `_Retry`, or raise the typed error."""
    last = attempt + 1 >= policy.attempts
    if exc is not None:
        bad_cert = _certificate_problem(exc)
        if bad_cert is not None:  # retrying cannot fix a certificate
            raise TLSVerificationError(
                f"{where}: the server's TLS certificate did not verify: "
                f"{bad_cert.verify_message or bad_cert} (ca_file / REMOTE_INFERENCE_CA_FILE "
                f"names the CA to trust)", correlation_id=correlation_id) from exc
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
    if resp.status_code == 401:  # a 4xx: never retried
        try:
            body: Any = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            body = resp.text
        raise authentication_error(message_from_body(body, "HTTP 401"), sent_token, where,
                                   resp.headers.get(CORRELATION_HEADER) or correlation_id)
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
        tokens: TokenSource | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.policy = policy
        self.tokens = tokens
        check_url_security(self.url, tokens, ca_file)
        self._http = httpx.Client(**_client_options(self.url, timeout, max_connections,
                                                    transport, ca_file))

    def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        correlation_id: str | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Any:
        headers = _headers(content, correlation_id, self.tokens)
        sent_token = "Authorization" in headers
        where = f"{self.url}{path}"
        for attempt in range(self.policy.attempts):
            try:
                try:
                    resp = self._http.request(method, path, content=content, headers=headers)
                except httpx.HTTPError as exc:
                    return _decide(self.policy, attempt, where, self.timeout, correlation_id,
                                   exc=exc)
                return _decide(self.policy, attempt, where, self.timeout, correlation_id,
                               resp=resp, accept=accept, sent_token=sent_token)
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
        tokens: TokenSource | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.policy = policy
        self.tokens = tokens
        check_url_security(self.url, tokens, ca_file)
        self._http = httpx.AsyncClient(**_client_options(self.url, timeout, max_connections,
                                                         transport, ca_file))

    async def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        correlation_id: str | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Any:
        headers = _headers(content, correlation_id, self.tokens)
        sent_token = "Authorization" in headers
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
                               resp=resp, accept=accept, sent_token=sent_token)
            except _Retry as retry:
                await asyncio.sleep(retry.delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        await self._http.aclose()
