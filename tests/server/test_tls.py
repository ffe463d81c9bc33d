"""TLS of the runtime (TLS_CERT_FILE, TLS_KEY_FILE): a real server on loopback with a
certificate from a private test CA; HTTPS verified against that CA, certificate reloads
without a restart, the settings' refusals, and the gRPC port over TLS with a token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from serving_runtime import grpc_protocol as pb
from serving_runtime.server import tls as tls_mod
from tests.support.auth_support import (
    CA,
    ROW,
    SecureServer,
    bearer,
    client_context,
    common_name,
    issue,
    make_ca,
    peer_certificate,
    run_to_exit,
    secret_dir,
    small_model,
    wait_until,
)

pytestmark = pytest.mark.slow

TOKEN = "tls-test-token-0123456789abcdef"
PREDICT = {"model_name": "m", "features": ROW}


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CA, Path, Path]:
    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    issue(ca, cert, key, cn="runtime-a")
    return ca, cert, key


def _tls_env(cert: Path, key: Path) -> dict[str, str]:
    return {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}


@pytest.fixture
def tls_server(tmp_path: Path, pki) -> Iterator[tuple[SecureServer, object]]:
    ca, cert, key = pki
    model = small_model(tmp_path / "models")
    srv = SecureServer(tmp_path / "models", ca=ca, log_path=tmp_path / "server.log",
                       env=_tls_env(cert, key))
    try:
        srv.wait_ready()
        yield srv, model
    finally:
        srv.stop()


def test_https_verified_against_the_ca_predicts(tls_server, pki) -> None:
    srv, model = tls_server
    ca, _, _ = pki
    r = httpx.post(f"https://127.0.0.1:{srv.port}/predict", json=PREDICT,
                   verify=client_context(ca), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == model.predict([[1.5, 0.0, 0.0]]).tolist()
    # not trusted without the CA
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{srv.port}/v2/health/live", timeout=10)


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server) -> None:
    srv, _ = tls_server
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{srv.port}/v2/health/live", timeout=10)
    # and the server still serves TLS afterwards
    assert srv.client.get("/v2/health/live").status_code == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(tls_server, pki) -> None:
    srv, _ = tls_server
    ca, cert, key = pki
    assert tls_mod.ReloadingTLS(cert, key).context.minimum_version == ssl.TLSVersion.TLSv1_2
    ctx = client_context(ca)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    # whether this OpenSSL can still offer TLS 1.1 or not, no handshake may succeed
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    ctx12 = client_context(ca)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2  # 1.2 itself is served
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ctx12.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        assert conn.version() == "TLSv1.2"


def test_a_rotated_certificate_is_served_without_a_restart(tls_server, pki) -> None:
    srv, _ = tls_server
    ca, cert, key = pki
    first = peer_certificate(srv.port, ca)
    assert common_name(first) == "runtime-a"
    pid = srv.proc.pid
    # mid-rotation: a new certificate whose key has not arrived yet -> the old one stays
    other_key = cert.parent / "other.key"
    issue(ca, cert.parent / "half.crt", other_key, cn="runtime-half")
    cert.write_bytes((cert.parent / "half.crt").read_bytes())
    wait_until(lambda: "do not load" in srv.logs(), timeout=8)
    assert common_name(peer_certificate(srv.port, ca)) == "runtime-a"
    # a whole new pair (another serial and CN)
    serial = issue(ca, cert, key, cn="runtime-b")
    took = wait_until(lambda: common_name(peer_certificate(srv.port, ca)) == "runtime-b",
                      timeout=10)
    assert took < 6, took
    assert int(peer_certificate(srv.port, ca)["serialNumber"], 16) == serial
    # another key type (EC -> RSA): OpenSSL keeps one certificate per key type in a
    # context, so loading into the served one would keep showing the EC certificate
    issue(ca, cert, key, cn="runtime-rsa", key_type="rsa")
    wait_until(lambda: common_name(peer_certificate(srv.port, ca)) == "runtime-rsa",
               timeout=10)
    assert _public_key_type(srv.port, ca) == "RSA"
    assert srv.proc.pid == pid and srv.proc.poll() is None  # no restart
    assert srv.client.get("/v2/health/ready").status_code == 200


def _public_key_type(port: int, ca: CA, server_name: str = "127.0.0.1") -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    key = x509.load_der_x509_certificate(der).public_key()
    return "RSA" if isinstance(key, rsa.RSAPublicKey) else \
        "EC" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__


def test_an_expired_certificate_fails_the_clients_verification(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    issue(ca, cert, key, expired=True)
    small_model(tmp_path / "models")
    srv = SecureServer(tmp_path / "models", log_path=tmp_path / "server.log",
                       env=_tls_env(cert, key))
    try:
        srv.client.close()
        srv.client = httpx.Client(base_url=f"https://127.0.0.1:{srv.port}", verify=False)
        srv.wait_live()  # it serves (the certificate loads), but no verifying client trusts it
        with pytest.raises(httpx.ConnectError, match="certificate has expired"):
            httpx.get(f"https://127.0.0.1:{srv.port}/v2/health/live",
                      verify=client_context(ca), timeout=10)
    finally:
        srv.stop()


@pytest.mark.parametrize("given,missing", [("TLS_CERT_FILE", "TLS_KEY_FILE"),
                                           ("TLS_KEY_FILE", "TLS_CERT_FILE")])
def test_half_a_tls_setting_stops_the_start_with_exit_2(tmp_path: Path, pki, given: str,
                                                         missing: str) -> None:
    _, cert, key = pki
    small_model(tmp_path / "models")
    done = run_to_exit(tmp_path / "models",
                       {given: str(cert if given == "TLS_CERT_FILE" else key)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{given} is set but {missing} is not" in done.stderr


def test_a_key_that_does_not_match_stops_the_start_with_exit_2(tmp_path: Path, pki) -> None:
    ca, cert, _ = pki
    issue(ca, tmp_path / "x.crt", tmp_path / "x.key")
    small_model(tmp_path / "models")
    done = run_to_exit(tmp_path / "models", _tls_env(cert, tmp_path / "x.key"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "do not load" in done.stderr


def test_workers_each_serve_tls_and_check_tokens(tmp_path: Path, pki) -> None:
    ca, cert, key = pki
    model = small_model(tmp_path / "models")
    tokens = secret_dir(tmp_path / "tokens", {"k": TOKEN})
    srv = SecureServer(tmp_path / "models", ca=ca, token=TOKEN, args=["--workers", "2"],
                       log_path=tmp_path / "server.log",
                       env={**_tls_env(cert, key), "AUTH_TOKENS_DIR": str(tokens)})
    try:
        srv.wait_ready(timeout=180)
        with httpx.Client(base_url=srv.url, verify=client_context(ca), timeout=10) as c:
            for _ in range(6):  # new connections: spread over both workers
                r = c.post("/predict", json=PREDICT, headers={**bearer(TOKEN),
                                                              "Connection": "close"})
                assert r.status_code == 200, r.text
                assert r.json()["prediction"] == model.predict([[1.5, 0, 0]]).tolist()
                assert c.post("/predict", json=PREDICT,
                              headers={"Connection": "close"}).status_code == 401
        issue(ca, cert, key, cn="runtime-b")
        # every worker reloads its own context: several new connections all see it
        wait_until(lambda: all(common_name(peer_certificate(srv.port, ca)) == "runtime-b"
                               for _ in range(6)), timeout=10)
    finally:
        srv.stop()


# --- gRPC over TLS, with a token ---

def _grpc_call(address: str, ca: CA, method: str, request: object,
               metadata: tuple[tuple[str, str], ...] = ()) -> object:
    creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    with grpc.secure_channel(address, creds) as channel:
        req_cls, resp_cls = pb.METHODS[method]
        fn = channel.unary_unary(f"/{pb.SERVICE}/{method}",
                                 request_serializer=req_cls.SerializeToString,
                                 response_deserializer=resp_cls.FromString)
        return fn(request, timeout=10, metadata=metadata)


def _infer_request() -> object:
    body = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": v}
                       for k, v in ROW.items()]}
    return pb.v2_to_request(body, "m")


def test_grpc_over_tls_needs_the_token(tmp_path: Path, pki) -> None:
    ca, cert, key = pki
    model = small_model(tmp_path / "models")
    tokens = secret_dir(tmp_path / "tokens", {"k": TOKEN})
    srv = SecureServer(tmp_path / "models", ca=ca, token=TOKEN, grpc=True,
                       log_path=tmp_path / "server.log",
                       env={**_tls_env(cert, key), "AUTH_TOKENS_DIR": str(tokens)})
    try:
        srv.wait_ready()
        address = srv.grpc_address
        assert address is not None
        # health RPCs open by default (AUTH_HEALTH=open), as the HTTP ones
        live = _grpc_call(address, ca, "ServerLive", pb.ServerLiveRequest())
        assert live.live  # type: ignore[attr-defined]
        for metadata, reason in (((), "authentication required"),
                                 ((("authorization", "Bearer nope"),), "invalid token"),
                                 ((("authorization", f"Basic {TOKEN}"),), "invalid token")):
            with pytest.raises(grpc.RpcError) as err:
                _grpc_call(address, ca, "ModelInfer", _infer_request(), metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            _grpc_call(address, ca, "ModelMetadata", pb.ModelMetadataRequest(name="m"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        resp = _grpc_call(address, ca, "ModelInfer", _infer_request(),
                          (("authorization", f"Bearer {TOKEN}"),))
        out = {o["name"]: o for o in pb.response_to_v2(resp)["outputs"]}
        assert out["predict"]["data"] == model.predict([[1.5, 0, 0]]).tolist()
        # the failures were counted with the HTTP ones
        metrics = srv.client.get("/metrics").text
        assert 'auth_failures_total{reason="missing"} 2.0' in metrics, metrics
        assert 'auth_failures_total{reason="invalid"} 2.0' in metrics
        # plaintext to the TLS port: no answer
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(f"/{pb.SERVICE}/ServerLive",
                                request_serializer=pb.ServerLiveRequest.SerializeToString,
                                response_deserializer=pb.ServerLiveResponse.FromString)(
                pb.ServerLiveRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # a rotated certificate: new gRPC connections get it too (dynamic credentials)
        issue(ca, cert, key, cn="runtime-b")
        port = int(address.rsplit(":", 1)[1])
        wait_until(lambda: _grpc_common_name(port, ca) == "runtime-b", timeout=12, step=0.5)
        live = _grpc_call(address, ca, "ServerLive", pb.ServerLiveRequest())
        assert live.live  # type: ignore[attr-defined]
    finally:
        srv.stop()


def _grpc_common_name(port: int, ca: CA) -> str:
    # the TLS handshake of the gRPC port (HTTP/2 via ALPN) shows its certificate
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            cert = conn.getpeercert()
    except (OSError, ssl.SSLError):
        return ""
    assert cert is not None
    return common_name(cert)


# --- the reloaders alone (server/tls.py), in this process ---

class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def _asyncio_tls_listener(ctx: ssl.SSLContext) -> Iterator[int]:
    """An asyncio TLS server with `ctx` (as uvicorn's: SSLObject, not SSLSocket) on a
    thread; its port."""
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def _served(port: int, ca: CA, server_name: str) -> tuple[str, str]:
    """(common name, key type) of the certificate a new handshake shows; server_name
    127.0.0.1 sends no SNI (Python sends none for an IP address), localhost sends it."""
    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as conn:
        cert = conn.getpeercert()
    assert cert is not None
    return common_name(cert), _public_key_type(port, ca, server_name)


@pytest.mark.parametrize("server_name", ["127.0.0.1", "localhost"])
def test_a_reload_moves_new_handshakes_to_a_fresh_context(tmp_path: Path, server_name: str
                                                          ) -> None:
    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    issue(ca, cert, key, cn="runtime-ec")
    clock = _Clock()
    tls = tls_mod.ReloadingTLS(cert, key, clock=clock)
    with _asyncio_tls_listener(tls.context) as port:
        assert _served(port, ca, server_name) == ("runtime-ec", "EC")
        for cn, key_type in (("runtime-rsa", "rsa"), ("runtime-ec-2", "ec"),
                             ("runtime-rsa-2", "rsa")):
            time.sleep(0.02)  # a new mtime even on a coarse file-system clock
            issue(ca, cert, key, cn=cn, key_type=key_type)  # type: ignore[arg-type]
            clock.now += tls_mod.RELOAD_CHECK_SECONDS
            assert tls.maybe_reload()
            assert tls.current is not tls.context
            assert tls.current.minimum_version == ssl.TLSVersion.TLSv1_2
            assert _served(port, ca, server_name) == (cn, key_type.upper())
    assert tls.generation == 3
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2


def _forbid_temporary_files(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Make every tempfile helper fail and record each load_cert_chain's paths."""
    def forbidden(*args: object, **kw: object) -> None:
        raise AssertionError("the TLS key must not be copied to a temporary file")

    for name in ("TemporaryDirectory", "NamedTemporaryFile", "mkstemp", "mkdtemp",
                 "TemporaryFile", "SpooledTemporaryFile"):
        monkeypatch.setattr(tempfile, name, forbidden)
    calls: list[tuple[str, str]] = []
    original = ssl.SSLContext.load_cert_chain

    def recording(self: ssl.SSLContext, certfile: object, keyfile: object = None,
                  password: object = None) -> None:
        calls.append((str(certfile), str(keyfile)))
        original(self, certfile, keyfile, password)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", recording)
    return calls


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_the_key_is_loaded_from_its_own_path_only(tmp_path: Path, pki, kind: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ca, cert, key = pki
    calls = _forbid_temporary_files(monkeypatch)
    clock = _Clock()
    cls = tls_mod.ReloadingTLS if kind == "http" else tls_mod.PemPair
    pair = cls(cert, key, clock=clock)
    time.sleep(0.02)
    issue(ca, cert, key, cn="runtime-b")
    clock.now += tls_mod.RELOAD_CHECK_SECONDS
    assert pair.maybe_reload()
    assert calls and set(calls) == {(str(cert), str(key))}, calls
    if isinstance(pair, tls_mod.PemPair):  # grpc gets the bytes; it has no SSLContext
        assert pair.pem == (cert.read_bytes(), key.read_bytes())
        assert not hasattr(pair, "context")


def test_a_pair_that_changes_while_loading_is_loaded_again(
        tmp_path: Path, pki, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    ca, cert, key = pki
    clock = _Clock()
    tls = tls_mod.ReloadingTLS(cert, key, clock=clock)
    original = ssl.SSLContext.load_cert_chain
    rotations = iter(["runtime-c"])  # one rotation lands during the first load

    def rotating(self: ssl.SSLContext, certfile: object, keyfile: object = None,
                 password: object = None) -> None:
        original(self, certfile, keyfile, password)  # type: ignore[arg-type]
        cn = next(rotations, None)
        if cn is not None:
            time.sleep(0.02)
            issue(ca, cert, key, cn=cn)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", rotating)
    time.sleep(0.02)
    issue(ca, cert, key, cn="runtime-b")
    clock.now += tls_mod.RELOAD_CHECK_SECONDS
    assert tls.maybe_reload()
    with _asyncio_tls_listener(tls.context) as port:
        # runtime-b was loaded while its files were replaced: the second load, runtime-c
        assert _served(port, ca, "127.0.0.1")[0] == "runtime-c"
        # files that keep changing: the old pair stays
        rotations = iter([f"runtime-x{i}" for i in range(tls_mod.LOAD_ATTEMPTS)])
        time.sleep(0.02)
        issue(ca, cert, key, cn="runtime-d")
        clock.now += tls_mod.RELOAD_CHECK_SECONDS
        with caplog.at_level(logging.WARNING, logger="serving_runtime.server.tls"):
            assert not tls.maybe_reload()
        assert "do not load" in caplog.text
        assert _served(port, ca, "127.0.0.1")[0] == "runtime-c"
    assert tls.generation == 1
