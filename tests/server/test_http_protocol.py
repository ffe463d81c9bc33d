"""The coalescing HTTP protocol (serving_runtime/server/http_protocol.py): writes made in
one event-loop turn leave as one write of the real transport, nothing is lost or reordered,
and `close()` sends what is pending first. Real sockets on loopback throughout; the
"recorder" only counts the calls it forwards to the real transport."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from serving_runtime.server.http_protocol import CoalescingTransport


class _Recorder:
    """Wraps a real transport and remembers each write it forwards."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _connected_pair() -> tuple[asyncio.Transport, socket.socket, asyncio.Server]:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Proto, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.settimeout(5)
    return await made, client, server


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_writes_of_one_loop_turn_leave_as_one_write_in_order() -> None:
    async def scenario() -> tuple[list[bytes], bytes, list[bytes]]:
        transport, client, server = await _connected_pair()
        rec = _Recorder(transport)
        out = CoalescingTransport(rec, asyncio.get_running_loop())  # type: ignore[arg-type]
        out.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        out.write(b"hello")
        assert rec.writes == []  # nothing sent before the turn ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first = list(rec.writes)
        out.write(b"second")  # a later turn: its own write
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        received = await asyncio.to_thread(_read_exactly, client, 49)
        out.close()
        client.close()
        server.close()
        return first, received, rec.writes

    first, received, writes = asyncio.run(scenario())
    assert first == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhellosecond"
    assert writes[1:] == [b"second"]


async def _read_to_eof(client: socket.socket) -> bytes:
    data = b""
    while chunk := await asyncio.to_thread(client.recv, 100):
        data += chunk
    return data


def test_close_sends_pending_bytes_first_and_later_writes_are_dropped() -> None:
    async def scenario() -> bytes:
        transport, client, server = await _connected_pair()
        out = CoalescingTransport(transport, asyncio.get_running_loop())
        out.write(b"last ")
        out.write(b"words")
        out.close()  # within the same turn: must not lose the pending bytes
        out.write(b"after close")  # uvicorn may race a write with a close: no error
        await asyncio.sleep(0.05)
        data = await _read_to_eof(client)
        client.close()
        server.close()
        return data

    assert asyncio.run(scenario()) == b"last words"


def test_pipelined_requests_get_every_response_in_order(tmp_path: Any) -> None:
    """Three requests in one TCP write to the real server (`python -m serving_runtime`, which
    uses the coalescing protocol): three complete responses, in request order."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from serving_runtime import save_model
    from tests.support.runtime_helpers import RuntimeServer

    X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    save_model(RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y),
               tmp_path / "models" / "m", version="1", sample=X[:2])
    srv = RuntimeServer(tmp_path / "models", log_path=tmp_path / "log")
    try:
        assert srv.wait_startup_done()["ready"]
        reqs = b""
        for i in range(3):
            body = (b'{"model_name":"m","features":{"f0":[%d],"f1":[0],"f2":[0],"f3":[0]},'
                    b'"correlation_id":"r%d"}' % (i, i))
            reqs += (b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(body)) + body
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(reqs)
            data = b""
            while data.count(b'"correlation_id":"r') < 3:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed early: {data!r}"
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 3
        order = [data.index(b'"correlation_id":"r%d"' % i) for i in range(3)]
        assert order == sorted(order)
    finally:
        srv.stop()


def test_the_server_uses_the_coalescing_protocol_when_httptools_is_there(
        monkeypatch: Any) -> None:
    """Without httptools (not an installable state here: uvicorn[standard] brings it) the
    server falls back to uvicorn's default protocol; simulated where the lookup happens."""
    import importlib.util

    from serving_runtime.__main__ import http_protocol
    from serving_runtime.server.http_protocol import CoalescingHttpToolsProtocol

    assert http_protocol() is CoalescingHttpToolsProtocol
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "httptools" else real_find_spec(name, *a))
    assert http_protocol() == "auto"


def test_write_eof_sends_pending_bytes_first() -> None:
    async def scenario() -> bytes:
        transport, client, server = await _connected_pair()
        out = CoalescingTransport(transport, asyncio.get_running_loop())
        out.write(b"all of ")
        out.write(b"it")
        assert out.get_write_buffer_size() >= len(b"all of it")
        out.write_eof()
        data = await _read_to_eof(client)
        out.close()
        client.close()
        server.close()
        return data

    assert asyncio.run(scenario()) == b"all of it"
