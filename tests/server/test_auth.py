"""Bearer-token authentication of the runtime (AUTH_TOKENS_DIR, AUTH_HEALTH, AUTH_METRICS):
a real `python -m serving_runtime` on loopback, tokens in a directory laid out as a
mounted Kubernetes Secret, real model files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving_runtime.server import auth
from tests.support.auth_support import (
    INVALID_CHALLENGE,
    REALM_CHALLENGE,
    ROW,
    SecureServer,
    bearer,
    rotate_secret,
    run_to_exit,
    secret_dir,
    small_model,
    wait_until,
)
from tests.support.metrics_text import metric_sum
from tests.support.runtime_helpers import free_port

TOKEN = "s3cr3t-token-Alpha-0123456789"
SECOND = "another-token-Beta-9876543210"
WRONG = "wrong-token-Gamma-5555555555"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureServer, object]]:
    root = tmp_path_factory.mktemp("auth")
    model = small_model(root / "models")
    tokens = secret_dir(root / "tokens", {"engine": f"  {TOKEN}\n", "ops": SECOND,
                                          "empty": "  \n"})
    srv = SecureServer(root / "models", token=TOKEN, log_path=root / "server.log",
                       env={"AUTH_TOKENS_DIR": str(tokens), "LOG_LEVEL": "debug"})
    try:
        srv.wait_ready()
        yield srv, model
    finally:
        srv.stop()


def _post(srv: SecureServer, path: str, body: dict, headers: dict[str, str] | None = None
          ) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, headers=headers or {}, timeout=10)


PREDICT = {"model_name": "m", "features": ROW}
V2_INFER = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": v}
                       for k, v in ROW.items()]}


def test_no_token_is_401_with_the_bearer_challenge(served) -> None:
    srv, _ = served
    r = _post(srv, "/predict", PREDICT)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == REALM_CHALLENGE
    doc = r.json()
    assert set(doc) == {"detail", "correlation_id"}, doc
    assert "Authorization: Bearer" in doc["detail"]
    assert r.headers["x-correlation-id"] == doc["correlation_id"]
    # the V2 family's shape
    r = _post(srv, "/v2/models/m/infer", V2_INFER)
    assert r.status_code == 401 and set(r.json()) == {"error"}, r.text
    assert r.headers["www-authenticate"] == REALM_CHALLENGE


def test_a_wrong_token_is_401_invalid_token(served) -> None:
    srv, _ = served
    r = _post(srv, "/predict", PREDICT, bearer(WRONG))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == INVALID_CHALLENGE
    assert WRONG not in r.text


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", TOKEN,
                                   f"Bearer {TOKEN} extra", f"Token {TOKEN}"])
def test_a_malformed_header_is_401_invalid_token(served, value: str) -> None:
    srv, _ = served
    r = _post(srv, "/predict", PREDICT, {"Authorization": value})
    assert r.status_code == 401, value
    assert r.headers["www-authenticate"] == INVALID_CHALLENGE


def test_an_empty_bearer_value_is_401_invalid_token(served) -> None:
    """`Authorization: Bearer ` (httpx refuses to send a trailing space): a raw socket."""
    srv, _ = served
    body = json.dumps(PREDICT).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer   \r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 401 " in status_line, answer
    assert INVALID_CHALLENGE.encode() in rest


def test_the_right_token_predicts(served) -> None:
    srv, model = served
    for token in (TOKEN, SECOND):  # each file of the directory is one accepted token
        r = _post(srv, "/predict", PREDICT, bearer(token))
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == model.predict([[1.5, 0.0, 0.0]]).tolist()
    r = _post(srv, "/predict", PREDICT, {"Authorization": f"bearer {TOKEN}"})  # scheme: any case
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/predict", PREDICT),
    ("POST", "/predict/batch", {"requests": [PREDICT]}),
    ("POST", "/explain", PREDICT),
    ("POST", "/v2/models/m/infer", V2_INFER),
    ("POST", "/v2/models/m/versions/1/infer", V2_INFER),
    ("GET", "/v2/models/m", None),
    ("GET", "/v2/models/m/ready", None),
    ("GET", "/v2", None),
    ("POST", "/reload/m", None),
    ("GET", "/openapi.json", None),
    ("GET", "/no/such/route", None),
])
def test_every_route_but_health_and_metrics_needs_the_token(served, method, path,
                                                            body) -> None:
    """The hot routes (served by the hot-path layer, not FastAPI) and the others."""
    srv, _ = served
    r = httpx.request(method, f"{srv.url}{path}", json=body, timeout=10)
    assert r.status_code == 401, (path, r.text)
    r = httpx.request(method, f"{srv.url}{path}", json=body, headers=bearer(TOKEN),
                      timeout=30)
    assert r.status_code != 401, (path, r.text)
    if path != "/no/such/route" and path != "/reload/m":
        assert r.status_code == 200, (path, r.text)


def test_health_and_metrics_are_open_by_default(served) -> None:
    srv, _ = served
    for path in ("/health", "/v2/health/live", "/v2/health/ready", "/metrics"):
        r = httpx.get(f"{srv.url}{path}", timeout=10)
        assert r.status_code == 200, (path, r.text)


def test_auth_failures_are_counted_by_reason(served) -> None:
    srv, _ = served

    def counts() -> tuple[float, float]:
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
        return (metric_sum(text, "auth_failures_total", reason="missing"),
                metric_sum(text, "auth_failures_total", reason="invalid"))

    missing0, invalid0 = counts()
    for _ in range(3):
        _post(srv, "/predict", PREDICT)
    for _ in range(2):
        _post(srv, "/v2/models/m/infer", V2_INFER, bearer(WRONG))
    _post(srv, "/predict", PREDICT, {"Authorization": "Basic abc"})
    _post(srv, "/predict", PREDICT, bearer(TOKEN))  # not a failure
    missing1, invalid1 = counts()
    assert (missing1 - missing0, invalid1 - invalid0) == (3, 3)


def test_no_token_ever_reaches_the_logs(served) -> None:
    srv, _ = served
    _post(srv, "/predict", PREDICT, bearer(WRONG))
    _post(srv, "/predict", {"model_name": "nope", "features": ROW}, bearer(TOKEN))  # a 404
    _post(srv, "/predict", {"model_name": "m", "features": {}}, bearer(TOKEN))  # a 422
    logs = srv.logs()
    assert '"level":"debug"' in logs or '"level": "debug"' in logs  # LOG_LEVEL=debug ran
    for secret in (TOKEN, SECOND, WRONG):
        assert secret not in logs
        assert hashlib.sha256(secret.encode()).hexdigest() not in logs
    assert "authorization" not in logs.lower()


def test_tokens_rotate_without_a_restart_and_health_metrics_can_need_one(
        tmp_path: Path) -> None:
    small_model(tmp_path / "models")
    tokens = secret_dir(tmp_path / "tokens", {"engine": TOKEN})
    srv = SecureServer(tmp_path / "models", token=TOKEN, log_path=tmp_path / "server.log",
                       env={"AUTH_TOKENS_DIR": str(tokens), "AUTH_HEALTH": "token",
                            "AUTH_METRICS": "token"})
    try:
        srv.wait_ready()  # its client sends the token
        for path in ("/health", "/v2/health/live", "/v2/health/ready", "/metrics"):
            r = httpx.get(f"{srv.url}{path}", timeout=10)
            assert r.status_code == 401, path
            assert httpx.get(f"{srv.url}{path}", headers=bearer(TOKEN),
                             timeout=10).status_code == 200, path

        def status(token: str) -> int:
            return _post(srv, "/predict", PREDICT, bearer(token)).status_code

        # the kubelet's rotation: the old key gone, a new one in
        rotate_secret(tokens, {"engine-2": SECOND})
        took = wait_until(lambda: status(SECOND) == 200, timeout=5)
        assert took < 3, took
        assert status(TOKEN) == 401
        # emptied: every protected request refused, and said once in the log
        rotate_secret(tokens, {})
        wait_until(lambda: status(SECOND) == 401, timeout=5)
        assert httpx.get(f"{srv.url}/v2/health/live", headers=bearer(SECOND),
                         timeout=10).status_code == 401
        wait_until(lambda: "holds no token" in srv.logs(), timeout=5)
        # a token back: served again
        rotate_secret(tokens, {"engine-3": TOKEN})
        wait_until(lambda: status(TOKEN) == 200, timeout=5)
        assert status(SECOND) == 401
        logs = srv.logs()
        assert logs.count("holds no token") == 1, logs
        assert TOKEN not in logs and SECOND not in logs
    finally:
        srv.stop()


@pytest.mark.parametrize("layout", ["empty", "only-dot-and-empty-files", "missing"])
def test_a_token_dir_without_a_token_stops_the_start_with_exit_2(tmp_path: Path,
                                                                  layout: str) -> None:
    small_model(tmp_path / "models")
    tokens = tmp_path / "tokens"
    if layout != "missing":
        tokens.mkdir()
    if layout == "only-dot-and-empty-files":
        (tokens / ".hidden").write_text(TOKEN)
        (tokens / "blank").write_text(" \n")
        (tokens / "sub").mkdir()
    done = run_to_exit(tmp_path / "models", {"AUTH_TOKENS_DIR": str(tokens)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "AUTH_TOKENS_DIR" in done.stderr and str(tokens) in done.stderr
    assert TOKEN not in done.stderr + done.stdout


# --- the token store alone (server/auth.py) ---

class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_store_reads_a_secret_mount_and_keeps_digests_only(tmp_path: Path) -> None:
    tokens = secret_dir(tmp_path / "t", {"a": f"\n {TOKEN} \n", "b": "", "c": SECOND})
    (tokens / ".extra").write_text(WRONG)
    clock = _Clock()
    store = auth.TokenStore(tokens, clock=clock)
    assert store.count == 2
    assert store.accepts(TOKEN.encode()) and store.accepts(SECOND.encode())
    assert not store.accepts(WRONG.encode()) and not store.accepts(b"")
    assert not any(TOKEN.encode() in d or SECOND.encode() in d
                   for d in store._digests)  # only SHA-256 digests in memory
    # re-scanned at most once per RESCAN_SECONDS
    rotate_secret(tokens, {"d": WRONG})
    assert not store.accepts(WRONG.encode())
    clock.now += auth.RESCAN_SECONDS
    assert store.accepts(WRONG.encode()) and not store.accepts(TOKEN.encode())


def test_the_store_sees_a_file_rewritten_in_place(tmp_path: Path) -> None:
    tokens = tmp_path / "t"
    tokens.mkdir()
    (tokens / "k").write_text(TOKEN)
    clock = _Clock()
    store = auth.TokenStore(tokens, clock=clock)
    (tokens / "k").write_text(SECOND + "-longer")
    clock.now += 5
    assert store.accepts(f"{SECOND}-longer".encode())
    assert not store.accepts(TOKEN.encode())


def test_an_unreadable_dir_fails_closed(tmp_path: Path, caplog) -> None:
    tokens = tmp_path / "t"
    tokens.mkdir()
    (tokens / "k").write_text(TOKEN)
    clock = _Clock()
    authn = auth.Authenticator(auth.TokenStore(tokens, clock=clock))
    assert authn.check(f"Bearer {TOKEN}") is None
    (tokens / "k").unlink()
    tokens.rmdir()
    clock.now += 5
    assert authn.check(f"Bearer {TOKEN}") == auth.INVALID
    assert authn.check(None) == auth.MISSING
    assert "cannot be read" in caplog.text and TOKEN not in caplog.text


def test_bearer_header_parsing() -> None:
    assert auth.bearer_token(b"Bearer abc") == b"abc"
    assert auth.bearer_token("BEARER  abc ") == b"abc"
    for bad in (None, b"", b"Bearer", b"Bearer ", b"Basic abc", b"abc", b"Bearer a b"):
        assert auth.bearer_token(bad) is None, bad


# --- a WebSocket (app.py AuthMiddleware), and the gRPC port's authenticator ---

def _websocket(tokens: Path, authorization: str | None, path: str = "/ws"
               ) -> tuple[list[dict], bool]:
    """What AuthMiddleware sends for a WebSocket handshake, and whether the app behind it
    was reached."""
    from serving_runtime.server.app import AuthMiddleware

    reached: list[bool] = []

    async def inner(scope: object, receive: object, send: object) -> None:
        reached.append(True)

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    headers = [(b"authorization", authorization.encode())] if authorization else []
    scope = {"type": "websocket", "path": path, "headers": headers}
    authn = auth.Authenticator(auth.TokenStore(tokens))
    asyncio.run(AuthMiddleware(inner, authn)(scope, receive, send))  # type: ignore[arg-type]
    return sent, bool(reached)


@pytest.mark.parametrize("authorization", [None, f"Bearer {WRONG}", f"Basic {TOKEN}"])
def test_a_websocket_without_an_accepted_token_is_closed_before_accept(
        tmp_path: Path, authorization: str | None) -> None:
    from serving_runtime.server.app import WS_POLICY_VIOLATION

    sent, reached = _websocket(secret_dir(tmp_path / "t", {"k": TOKEN}), authorization)
    assert not reached
    assert [m["type"] for m in sent] == ["websocket.close"], sent
    assert sent[0]["code"] == WS_POLICY_VIOLATION == 1008
    assert TOKEN not in repr(sent) and WRONG not in repr(sent)


def test_a_websocket_with_the_token_or_on_an_open_path_passes(tmp_path: Path) -> None:
    tokens = secret_dir(tmp_path / "t", {"k": TOKEN})
    assert _websocket(tokens, f"Bearer {TOKEN}") == ([], True)
    assert _websocket(tokens, None, path="/health") == ([], True)  # AUTH_HEALTH=open


def test_the_grpc_server_cannot_start_without_the_authenticator(tmp_path: Path) -> None:
    import inspect

    from serving_runtime.server import grpc_server
    from serving_runtime.server.settings import Settings

    param = inspect.signature(grpc_server.start).parameters["authenticator"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY
    assert param.default is inspect.Parameter.empty  # no default: never forgotten
    tokens = secret_dir(tmp_path / "tokens", {"k": TOKEN})
    settings = Settings(models_dir=tmp_path, grpc_port=free_port(), auth_tokens_dir=tokens)
    with pytest.raises(ValueError, match="AUTH_TOKENS_DIR is set but no authenticator"):
        asyncio.run(grpc_server.start(settings, None, authenticator=None))  # type: ignore[arg-type]


def test_grpc_without_tls_refuses_a_call_without_the_token(tmp_path: Path) -> None:
    """The runtime started the normal way (`python -m serving_runtime`, AUTH_TOKENS_DIR):
    its gRPC port checks the token as its HTTP port does."""
    import grpc

    from serving_runtime import grpc_protocol as pb

    small_model(tmp_path / "models")
    tokens = secret_dir(tmp_path / "tokens", {"k": TOKEN})
    srv = SecureServer(tmp_path / "models", token=TOKEN, grpc=True,
                       log_path=tmp_path / "server.log", env={"AUTH_TOKENS_DIR": str(tokens)})
    try:
        srv.wait_ready()
        assert srv.grpc_address is not None
        with grpc.insecure_channel(srv.grpc_address) as channel:
            meta = channel.unary_unary(
                f"/{pb.SERVICE}/ModelMetadata",
                request_serializer=pb.ModelMetadataRequest.SerializeToString,
                response_deserializer=pb.ModelMetadataResponse.FromString)
            with pytest.raises(grpc.RpcError) as err:
                meta(pb.ModelMetadataRequest(name="m"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            got = meta(pb.ModelMetadataRequest(name="m"), timeout=10,
                       metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert got.name == "m"
    finally:
        srv.stop()
