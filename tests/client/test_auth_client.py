"""The client against a runtime with tokens and TLS (a real server on loopback, a test CA):
token= / token_file= / ca_file= and their REMOTE_INFERENCE_* variables, AuthenticationError
on a 401 (gRPC: UNAUTHENTICATED) sent exactly once (never retried), a rotated token file,
and certificate verification."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving_runtime.client import (
    AsyncInferenceClient,
    AuthenticationError,
    ClientSettings,
    InferenceClient,
    RetryPolicy,
    ServiceUnavailableError,
    TLSVerificationError,
)
from serving_runtime.client.remote import TokenSource
from tests.support.auth_support import (
    CA,
    ROW,
    SecureServer,
    issue,
    make_ca,
    rotate_secret,
    secret_dir,
    small_model,
    wait_until,
)
from tests.support.metrics_text import metric_sum

pytestmark = pytest.mark.slow

TOKEN = "client-test-token-0123456789"
SECOND = "client-test-token-rotated-42"
# retries allowed: a 401 must still be sent once only
RETRYING = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05, max_retry_after=0.1)


@dataclass
class Runtime:
    srv: SecureServer
    ca: CA
    tokens: Path
    model: object

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.srv.port}"

    @property
    def grpcs(self) -> str:
        return f"grpcs://{self.srv.grpc_address}"

    def failures(self, reason: str) -> float:
        text = self.srv.client.get("/metrics").text
        return metric_sum(text, "auth_failures_total", reason=reason)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    root = tmp_path_factory.mktemp("auth-client")
    ca = make_ca(root / "ca")
    cert, key = root / "tls.crt", root / "tls.key"
    issue(ca, cert, key)
    model = small_model(root / "models")
    tokens = secret_dir(root / "tokens", {"engine": TOKEN})
    srv = SecureServer(root / "models", ca=ca, token=TOKEN, grpc=True,
                       log_path=root / "server.log",
                       env={"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key),
                            "AUTH_TOKENS_DIR": str(tokens)})
    try:
        srv.wait_ready()
        yield Runtime(srv, ca, tokens, model)
    finally:
        srv.stop()


def _expected(rt: Runtime) -> list:
    return rt.model.predict([[1.5, 0.0, 0.0]]).tolist()  # type: ignore[attr-defined]


def test_the_token_is_sent_and_the_server_verified(runtime: Runtime) -> None:
    with InferenceClient(remote=True, url=runtime.https, token=TOKEN,
                         ca_file=runtime.ca.path) as client:
        assert client.predict("m", ROW)["prediction"] == _expected(runtime)
        assert client.health()["ready"]


@pytest.mark.parametrize("token,reason,words", [(None, "missing", "none was sent"),
                                                ("not-the-token", "invalid", "rejected")])
def test_a_401_is_an_authentication_error_sent_once(runtime: Runtime, token, reason,
                                                    words) -> None:
    before = runtime.failures(reason)
    with InferenceClient(remote=True, url=runtime.https, token=token, retry=RETRYING,
                         ca_file=runtime.ca.path) as client, \
            pytest.raises(AuthenticationError, match=words) as err:
        client.predict("m", ROW)
    assert err.value.status_code == 401
    assert "not-the-token" not in str(err.value)  # the token never in a message
    assert runtime.failures(reason) - before == 1  # exactly one request: no retry


def test_the_async_client_too(runtime: Runtime) -> None:
    async def run() -> None:
        async with AsyncInferenceClient(remote=True, url=runtime.https, token=TOKEN,
                                        ca_file=runtime.ca.path) as client:
            assert (await client.predict("m", ROW))["prediction"] == _expected(runtime)
        async with AsyncInferenceClient(remote=True, url=runtime.https, retry=RETRYING,
                                        ca_file=runtime.ca.path) as client:
            with pytest.raises(AuthenticationError):
                await client.predict("m", ROW)

    asyncio.run(run())


def test_settings_from_the_environment(runtime: Runtime, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    monkeypatch.setenv("REMOTE_INFERENCE_ENABLED", "true")
    monkeypatch.setenv("REMOTE_INFERENCE_URL", runtime.https)
    monkeypatch.setenv("REMOTE_INFERENCE_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("REMOTE_INFERENCE_CA_FILE", str(runtime.ca.path))
    with InferenceClient() as client:
        assert client.predict("m", ROW)["prediction"] == _expected(runtime)
    monkeypatch.delenv("REMOTE_INFERENCE_TOKEN_FILE")
    monkeypatch.setenv("REMOTE_INFERENCE_TOKEN", TOKEN)
    s = ClientSettings()
    assert s.remote_inference_token is not None
    assert s.remote_inference_token.get_secret_value() == TOKEN
    assert s.remote_inference_ca_file == runtime.ca.path
    with InferenceClient() as client:
        assert client.predict("m", ROW)["prediction"] == _expected(runtime)
    # an argument beats the environment
    with InferenceClient(token="wrong", retry=RETRYING) as client, \
            pytest.raises(AuthenticationError):
        client.predict("m", ROW)


def test_a_rotated_token_file_is_picked_up(runtime: Runtime, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with InferenceClient(remote=True, url=runtime.https, token_file=token_file,
                         ca_file=runtime.ca.path) as client:
        assert client.predict("m", ROW)["prediction"] == _expected(runtime)
        try:
            rotate_secret(runtime.tokens, {"engine-2": SECOND})  # the server's Secret
            token_file.write_text(SECOND)  # and the client's mounted copy

            def works() -> bool:
                try:
                    client.predict("m", ROW)
                    return True
                except AuthenticationError:
                    return False

            assert wait_until(works, timeout=6, step=0.2) < 4
        finally:
            rotate_secret(runtime.tokens, {"engine": TOKEN})
            wait_until(lambda: runtime.srv.client.get("/v2/models/m").status_code == 200,
                       timeout=5)


def test_grpc_against_another_ca_is_a_tls_verification_error(runtime: Runtime,
                                                              tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other", name="someone else")
    with InferenceClient(remote=True, url=runtime.grpcs, token=TOKEN, ca_file=other.path,
                         retry=RETRYING) as client, \
            pytest.raises(TLSVerificationError, match="did not verify"):
        client.predict("m", ROW)


def test_the_certificate_is_verified(runtime: Runtime, tmp_path: Path) -> None:
    # system CAs (the default for https://) do not know the test CA
    with InferenceClient(remote=True, url=runtime.https, token=TOKEN,
                         retry=RETRYING) as client, \
            pytest.raises(TLSVerificationError, match="did not verify") as err:
        client.predict("m", ROW)
    assert isinstance(err.value, ServiceUnavailableError)
    # another CA
    other = make_ca(tmp_path / "other", name="someone else")
    with InferenceClient(remote=True, url=runtime.https, token=TOKEN, ca_file=other.path,
                         retry=RETRYING) as client, \
            pytest.raises(TLSVerificationError, match="unable to get local issuer"):
        client.predict("m", ROW)


def test_an_expired_server_certificate_is_a_clear_error(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    issue(ca, cert, key, expired=True)
    small_model(tmp_path / "models")
    srv = SecureServer(tmp_path / "models", log_path=tmp_path / "server.log", grpc=True,
                       env={"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
    try:
        srv.client.close()
        srv.client = httpx.Client(base_url=f"https://127.0.0.1:{srv.port}", verify=False)
        srv.wait_live()
        with InferenceClient(remote=True, url=f"https://127.0.0.1:{srv.port}",
                             ca_file=ca.path, retry=RETRYING) as client, \
                pytest.raises(TLSVerificationError, match="certificate has expired"):
            client.predict("m", ROW)
        # gRPC: grpc reports the failed handshake as UNAVAILABLE; still a certificate
        # problem, not retried (a retried call would take the policy's backoff and end
        # as a plain ServiceUnavailableError)
        slow_retries = RetryPolicy(retries=3, backoff=10.0, max_backoff=10.0)
        with InferenceClient(remote=True, url=f"grpcs://{srv.grpc_address}",
                             ca_file=ca.path, retry=slow_retries) as client:
            t0 = time.monotonic()
            with pytest.raises(TLSVerificationError, match="did not verify") as err:
                client.predict("m", ROW)
            # one retry would have slept 10 s: far beyond any handshake on a busy machine
            assert time.monotonic() - t0 < 8.0, "retried"
        assert "CERTIFICATE_VERIFY_FAILED" in str(err.value) or \
            "certificate verify failed" in str(err.value).lower(), err.value
        assert isinstance(err.value, ServiceUnavailableError)
    finally:
        srv.stop()


def test_token_source_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TokenSource("a", tmp_path / "x")
    with pytest.raises(ValueError):
        TokenSource("  ")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        TokenSource(token_file=empty)
    with pytest.raises(FileNotFoundError):
        TokenSource(token_file=tmp_path / "missing")
    f = tmp_path / "t"
    f.write_text(" abc \n")
    src = TokenSource(token_file=f, check_seconds=0)
    assert src.header() == "Bearer abc"
    f.unlink()  # mid-rotation: the last token stays
    assert src.header() == "Bearer abc"
    f.write_text("def")
    assert src.header() == "Bearer def"
    assert "def" not in repr(src) and "abc" not in repr(TokenSource("abc"))


# --- gRPC ---

def test_grpc_with_tls_and_a_token(runtime: Runtime) -> None:
    with InferenceClient(remote=True, url=runtime.grpcs, token=TOKEN,
                         ca_file=runtime.ca.path) as client:
        assert client.predict("m", ROW)["prediction"] == _expected(runtime)
    for token, reason, words in ((None, "missing", "none was sent"),
                                 ("nope", "invalid", "rejected")):
        before = runtime.failures(reason)
        with InferenceClient(remote=True, url=runtime.grpcs, token=token, retry=RETRYING,
                             ca_file=runtime.ca.path) as client, \
                pytest.raises(AuthenticationError, match=words):
            client.predict("m", ROW)
        assert runtime.failures(reason) - before == 1  # one RPC (ModelMetadata), no retry


def test_async_grpc_with_tls_and_a_token(runtime: Runtime) -> None:
    async def run() -> None:
        async with AsyncInferenceClient(remote=True, url=runtime.grpcs, token=TOKEN,
                                        ca_file=runtime.ca.path) as client:
            assert (await client.predict("m", ROW))["prediction"] == _expected(runtime)
        async with AsyncInferenceClient(remote=True, url=runtime.grpcs, token="nope",
                                        ca_file=runtime.ca.path, retry=RETRYING) as client:
            with pytest.raises(AuthenticationError):
                await client.predict("m", ROW)

    asyncio.run(run())


# --- what the client refuses or warns about, and what it never shows ---

def test_the_token_is_in_no_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REMOTE_INFERENCE_TOKEN", TOKEN)
    monkeypatch.setenv("REMOTE_INFERENCE_ENABLED", "true")
    monkeypatch.setenv("REMOTE_INFERENCE_URL", "https://runtime.example:8000")
    settings = ClientSettings()
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    assert TOKEN not in repr(settings.model_dump())
    assert settings.remote_inference_token is not None
    assert settings.remote_inference_token.get_secret_value() == TOKEN
    with InferenceClient() as client:
        assert TOKEN not in repr(client), repr(client)
        assert "mode='remote'" in repr(client) and "runtime.example" in repr(client)
    with InferenceClient(remote=True, url="grpcs://runtime.example:8081", token=TOKEN) as c:
        assert TOKEN not in repr(c)
    token_file = tmp_path / "token"
    token_file.write_text(SECOND)

    async def run() -> None:
        async with AsyncInferenceClient(remote=True, url="https://runtime.example:8000",
                                        token_file=token_file) as client:
            assert SECOND not in repr(client) and str(token_file) in repr(client)

    asyncio.run(run())
    assert repr(InferenceClient(remote=False, models_dir=tmp_path)) == \
        "InferenceClient(mode='local')"


@pytest.mark.parametrize("url,secure", [("http://runtime.example:8000", "https://"),
                                        ("grpc://runtime.example:8081", "grpcs://"),
                                        ("http://127.0.0.1:8000", "https://")])
def test_a_ca_file_with_a_plaintext_url_is_refused(tmp_path: Path, url: str,
                                                   secure: str) -> None:
    ca = make_ca(tmp_path / "ca")
    scheme = url.split(":", 1)[0]
    for cls in (InferenceClient, AsyncInferenceClient):
        with pytest.raises(ValueError, match=r"ca_file \(or REMOTE_INFERENCE_CA_FILE\) "
                                             f"given but the URL is {scheme}://; "
                                             f"use {secure}") as err:
            cls(remote=True, url=url, token=TOKEN, ca_file=ca.path)
        assert TOKEN not in str(err.value)


def test_a_token_over_plain_http_off_loopback_warns_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from serving_runtime.client import remote

    monkeypatch.setattr(remote, "_warned_plaintext", set())
    with caplog.at_level(logging.WARNING, logger="serving_runtime.client"):
        for _ in range(2):
            InferenceClient(remote=True, url="http://iris.models.svc:8000",
                            token=TOKEN).close()
        InferenceClient(remote=True, url="grpc://iris.models.svc:8081", token=TOKEN).close()
        # no warning: loopback, TLS, or no token
        for url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
                    "grpc://127.0.0.1:8081", "https://iris.models.svc:8000",
                    "grpcs://iris.models.svc:8081"):
            InferenceClient(remote=True, url=url, token=TOKEN).close()
        InferenceClient(remote=True, url="http://other.models.svc:8000").close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(" to ")[1].split(":")[0:2] for r in warnings] == [
        ["http", "//iris.models.svc"], ["grpc", "//iris.models.svc"]], caplog.text
    assert "plain http://" in warnings[0].getMessage()
    assert TOKEN not in caplog.text


def test_a_grpc_handshake_failure_is_not_retried() -> None:
    import grpc

    from serving_runtime.client import grpc_remote

    class Failed(grpc.RpcError):
        def __init__(self, details: str) -> None:
            self._details = details

        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return self._details

    bad_cert = ("failed to connect to all addresses; last error: UNKNOWN: "
                "ipv4:127.0.0.1:1234: Ssl handshake failed (TSI_PROTOCOL_FAILURE): "
                "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
                "CERTIFICATE_VERIFY_FAILED: certificate verify failed")
    with pytest.raises(TLSVerificationError):  # at the first attempt: not retried
        grpc_remote._raise(RETRYING, 0, "grpcs://x", 5.0, Failed(bad_cert), "cid")
    # a refused connection, or a handshake cut short (a pod going away), still is
    for details in ("failed to connect to all addresses; last error: UNAVAILABLE: "
                    "ipv4:127.0.0.1:1234: Connection refused",
                    "failed to connect to all addresses; last error: UNKNOWN: "
                    "ipv4:127.0.0.1:1234: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
                    "SSL_ERROR_SYSCALL: Connection reset by peer"):
        with pytest.raises(grpc_remote._Retry):
            grpc_remote._raise(RETRYING, 0, "grpcs://x", 5.0, Failed(details), "cid")
