"""Graceful drain on SIGTERM (serving_runtime/server/uvicorn_server.py), against a real
`python -m serving_runtime` process and real signals, over raw sockets so that the
Connection header, the server's close (EOF) and a reset are each visible.

Kubernetes sends SIGTERM when it deletes a pod; until the Service stops routing to it and
pooled clients move away, the pod must answer everything, tell each client to reconnect
(`Connection: close`), fail readiness, and then exit 0.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.support.runtime_helpers import RuntimeServer

DRAIN = 3.0  # DRAIN_SECONDS of these servers (default 10; shorter keeps the tests short)
MARGIN = 4.0  # start-up of the shutdown, process exit, a loaded machine
ROW = {"f0": [0.1], "f1": [-0.3], "f2": [1.2], "f3": [0.0]}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from serving_runtime import save_model

    root = tmp_path_factory.mktemp("drain") / "models"
    X, y = make_classification(n_samples=300, n_features=4, random_state=0)
    est = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    save_model(est, root / "m1", version="1", sample=X[:5])
    return root


@pytest.fixture(scope="module")
def no_httptools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PYTHONPATH entry whose sitecustomize hides httptools: the runtime then serves
    with uvicorn's default protocol (h11), as where httptools is not installed."""
    d = tmp_path_factory.mktemp("no-httptools")
    (d / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.modules['httptools'] = None  # find_spec() -> None, import -> ImportError\n")
    return d


class Conn:
    """One HTTP/1.1 keep-alive connection, as a pooled client holds it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send_head(self, method: str, path: str, body: bytes | None) -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n")

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection before answering")
        self.buf += data

    def request(self, method: str, path: str,
                doc: object = None) -> tuple[int, dict[str, str], bytes]:
        body = None if doc is None else json.dumps(doc).encode()
        self.send_head(method, path, body)
        if body:
            self.sock.sendall(body)
        return self.read_response()

    def is_open(self) -> bool:
        """Nothing to read (no EOF, no reset) right now."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable

    def closed_cleanly(self, timeout: float) -> bool:
        """Waits for the server's close: True on EOF; a reset raises (ConnectionResetError),
        still open after `timeout` is False."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return False
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def fresh(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection, which must then be closed by the server."""
    c = Conn(port)
    try:
        status, headers, body = c.request(method, path)
        assert headers.get("connection") == "close", (path, headers)
        assert c.closed_cleanly(5), f"{path}: server kept the connection open while draining"
        return status, headers, body
    finally:
        c.close()


def wait_draining(port: int, timeout: float = 5) -> None:
    """Until readiness fails on 5 new connections in a row (with several workers, each
    connection lands on any of them, and each gets its SIGTERM from the supervisor)."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while in_a_row < 5:
        assert time.monotonic() < deadline, "readiness still 200 after SIGTERM"
        c = Conn(port)
        status, _, _ = c.request("GET", "/v2/health/ready")
        c.close()
        in_a_row = in_a_row + 1 if status == 503 else 0


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "protocol"),
                         [(1, "coalescing"), (2, "coalescing"), (1, "h11")])
def test_sigterm_drains_then_exits_zero(start_server, models_dir: Path, no_httptools: Path,
                                        workers: int, protocol: str) -> None:
    env = {"DRAIN_SECONDS": str(DRAIN)}
    if protocol == "h11":
        env["PYTHONPATH"] = str(no_httptools)
    srv: RuntimeServer = start_server(models_dir, env=env, args=["--workers", str(workers)])
    srv.wait_ready()
    assert ("httptools is not installed" in srv.logs()) == (protocol == "h11")
    srv.client.close()  # the helper's own pool: only this test's connections stay open
    port = srv.port

    # Before SIGTERM: keep-alive as usual (no Connection: close).
    idle, busy, slow = Conn(port), Conn(port), Conn(port)
    status, headers, _ = idle.request("GET", "/v2/health/live")
    assert status == 200 and "connection" not in headers
    for _ in range(3):
        status, headers, _ = busy.request("POST", "/predict", {"model_name": "m1",
                                                              "features": ROW})
        assert status == 200 and "connection" not in headers
    # A request in flight across the SIGTERM: head and half of the body sent before it.
    slow_body = json.dumps({"model_name": "m1", "features": ROW}).encode()
    slow.send_head("POST", "/predict", slow_body)
    slow.sock.sendall(slow_body[:10])
    time.sleep(0.2)

    sigterm_at = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)

    # (a) not ready at once, live
    wait_draining(port)
    assert fresh(port, "GET", "/v2/health/live")[0] == 200
    assert fresh(port, "GET", "/v2/models/m1/ready")[0] == 503
    status, _, body = fresh(port, "GET", "/health")
    doc = json.loads(body)
    assert status == 503 and doc["ready"] is False and doc["reasons"][0].startswith("draining")

    # the in-flight request is answered, and told to reconnect
    slow.sock.sendall(slow_body[10:])
    status, headers, _ = slow.read_response()
    assert status == 200 and headers.get("connection") == "close"
    assert slow.closed_cleanly(5)

    # (b, c) a client that keeps sending: every answer 200 + Connection: close, then the
    # server closes, the client reconnects (a new connection during the drain) and goes on.
    # Hot route (/predict) and a FastAPI route (/v2/models/m1) alternate.
    answered, failures = 0, []
    loop_until = time.monotonic() + 1.5
    while time.monotonic() < loop_until and answered < 2000:
        try:
            if answered % 2:
                status, headers, _ = busy.request("GET", "/v2/models/m1")
            else:
                status, headers, _ = busy.request("POST", "/predict",
                                                  {"model_name": "m1", "features": ROW})
            if status != 200 or headers.get("connection") != "close":
                failures.append((status, headers))
            elif not busy.closed_cleanly(5):
                failures.append("connection not closed after Connection: close")
            answered += 1
        except OSError as exc:
            failures.append(repr(exc))
        busy.close()
        busy = Conn(port)
    busy.close()
    assert not failures, f"{len(failures)} failed of {answered + len(failures)}: {failures[:3]}"
    assert answered >= 20, answered

    # idle keep-alive connections are not cut at the start of the drain ...
    assert idle.is_open(), "idle connection closed early in the drain"
    # (e) ... but closed cleanly (EOF, not a reset) by its end
    assert idle.closed_cleanly(DRAIN + MARGIN), "idle connection still open after the drain"
    idle.close()

    # (d) exit 0, after the drain period (the idle connection kept it going), within margin
    rc = srv.proc.wait(DRAIN + 2 * MARGIN)
    elapsed = time.monotonic() - sigterm_at
    assert rc == 0, srv.logs()[-3000:]
    assert DRAIN - 0.5 <= elapsed <= DRAIN + MARGIN, elapsed


@pytest.mark.slow
def test_sigterm_without_connections_exits_soon(start_server, models_dir: Path) -> None:
    """No connection open: exit 0 after the short minimum, not the whole drain period."""
    srv: RuntimeServer = start_server(models_dir, env={"DRAIN_SECONDS": "30"})
    srv.wait_ready()
    srv.client.close()
    sigterm_at = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    rc = srv.proc.wait(30)
    elapsed = time.monotonic() - sigterm_at
    assert rc == 0, srv.logs()[-3000:]
    assert 1.0 <= elapsed <= 1.0 + MARGIN, elapsed
    assert "drained: no connection left" in srv.logs()
