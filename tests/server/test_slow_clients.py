"""Slow and many clients against a real `python -m serving_runtime`
(serving_runtime/server/http_protocol.py), over raw sockets: a head or body trickling in,
a body shorter than its Content-Length, more connections than MAX_CONNECTIONS_PER_WORKER,
and a body larger than MAX_BODY_BYTES written in full before the client reads the 413."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.raw_http import PREDICT, RawConn, small_models, socket_fds, wait_socket_fds
from tests.support.runtime_helpers import RuntimeServer

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 2.0
CAP = 6
MAX_BODY = 2000
MARGIN = 8.0  # the deadline sweep (0.25 s), a loaded shared (2-core) machine

BODY = json.dumps(PREDICT).encode()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_models(tmp_path_factory.mktemp("slow-clients") / "models")


@pytest.fixture(scope="module")
def srv(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = RuntimeServer(
        models_dir, log_path=tmp_path_factory.mktemp("slow-log") / "server.log",
        env={"HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
             "BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT), "MAX_CONNECTIONS_PER_WORKER": str(CAP)},
        args=["--max-body-bytes", str(MAX_BODY)])
    try:
        server.wait_ready()
        server.client.close()  # its pooled connection would count against the cap
        server.idle_sockets = _settled_sockets(server.proc.pid)  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


def _settled_sockets(pid: int) -> int:
    """The sockets the server holds with no client connected (its listening ones): the
    count once it stops changing."""
    last, deadline = socket_fds(pid), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = socket_fds(pid)
        if now == last:
            break
        last = now
    return last


def _wait_connections_closed(srv: RuntimeServer, held: int = 0) -> None:
    """Until the server holds at most `held` client connections (those the tests before
    closed are closed on the server's side too, which takes a loop turn or a sweep)."""
    idle = srv.idle_sockets  # type: ignore[attr-defined]
    count = wait_socket_fds(srv.proc.pid, idle + held, 10)
    assert count <= idle + held, f"server still holds {count - idle} connections, not {held}"


def _timed_response(conn: RawConn, limit: float,
                    t0: float) -> tuple[float, int, dict[str, str], dict]:
    status, headers, body = conn.read_response(timeout=limit + MARGIN)
    return time.monotonic() - t0, status, headers, json.loads(body)


def test_a_trickled_head_gets_408_and_is_closed(srv: RuntimeServer) -> None:
    t0 = time.monotonic()
    conn = RawConn(srv.port)
    conn.send(b"POST /predict HTTP/1.1\r\nHost: t\r\nX-Correlation-ID: slow-1\r\n")
    answer = None
    while time.monotonic() - t0 < HEADER_TIMEOUT + MARGIN and answer is None:
        try:
            conn.send(b"a")  # a header that never ends
        except OSError:
            break
        if not conn.is_open():
            answer = conn.read_response(timeout=2)
        time.sleep(0.1)
    took = time.monotonic() - t0
    assert answer is not None, f"head still being read after {took:.1f} s"
    status, headers, body = answer
    assert status == 408 and headers["connection"] == "close"
    assert "HEADER_TIMEOUT_SECONDS" in json.loads(body)["detail"]
    assert HEADER_TIMEOUT - 0.3 <= took <= HEADER_TIMEOUT + MARGIN, took
    assert conn.wait_closed(3) == "eof"
    conn.close()


def test_a_huge_head_sent_fast_is_431_not_buffered(srv: RuntimeServer) -> None:
    """Not slow: a header growing at full speed. Without a bound the parser buffers it all
    (measured before the bound: 62 MiB taken in 8 s, +100 MiB RSS, then answered 200)."""
    conn = RawConn(srv.port)
    conn.send(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Big: ")
    sent = 0
    try:
        while sent < 16 << 20:
            conn.send(b"a" * (64 << 10))
            sent += 64 << 10
    except OSError:
        pass
    print(f"\nsent {sent >> 10} KiB of one header before the server stopped reading")
    assert sent < 8 << 20, "the server kept buffering the head"
    try:
        status, _, body = conn.read_response(timeout=5)
        assert status == 431 and "request head larger than" in json.loads(body)["detail"]
    except ConnectionResetError:
        pass  # the client was still sending when the server closed: the kernel resets
    conn.close()


def test_a_silent_connection_is_closed_but_an_idle_keepalive_one_is_not(
        srv: RuntimeServer) -> None:
    kept = RawConn(srv.port)
    assert kept.request("POST", "/predict", PREDICT)[0] == 200
    t0 = time.monotonic()
    silent = RawConn(srv.port)
    assert silent.wait_closed(HEADER_TIMEOUT + MARGIN) == "eof"  # nothing sent: no 408
    assert time.monotonic() - t0 >= HEADER_TIMEOUT - 0.3
    # after an answer the connection is idle, not slow: uvicorn's keep-alive (5 s) rules
    time.sleep(max(0.0, HEADER_TIMEOUT + 0.5 - (time.monotonic() - t0)))
    assert kept.is_open()
    assert kept.request("POST", "/predict", PREDICT)[0] == 200
    silent.close()
    kept.close()


@pytest.mark.parametrize("path", ["/predict", "/v2/models/m1/infer"])
def test_a_body_short_of_its_content_length_gets_408(srv: RuntimeServer, path: str) -> None:
    conn = RawConn(srv.port)
    t0 = time.monotonic()
    conn.send_head("POST", path, len(BODY), headers={"X-Correlation-ID": "short-1"})
    conn.send(BODY[:10])
    took, status, headers, doc = _timed_response(conn, BODY_TIMEOUT, t0)
    assert status == 408 and headers["connection"] == "close"
    message = doc["error"] if path.startswith("/v2/") else doc["detail"]
    assert f"received 10 of {len(BODY)} bytes (Content-Length)" in message, message
    assert "BODY_TIMEOUT_SECONDS" in message
    if not path.startswith("/v2/"):
        assert doc["correlation_id"] == "short-1" and headers["x-correlation-id"] == "short-1"
    assert BODY_TIMEOUT - 0.3 <= took <= BODY_TIMEOUT + MARGIN, took
    assert conn.wait_closed(3) == "eof"
    conn.close()


def test_a_trickled_chunked_body_gets_408_and_a_slow_complete_one_is_answered(
        srv: RuntimeServer) -> None:
    conn = RawConn(srv.port)
    conn.send_head("POST", "/predict", chunked=True)
    t0 = time.monotonic()
    answer = None
    while time.monotonic() - t0 < BODY_TIMEOUT + MARGIN and answer is None:
        try:
            conn.send(b"1\r\n \r\n")  # one byte of whitespace per chunk, never the last chunk
        except OSError:
            break
        if not conn.is_open():
            answer = conn.read_response(timeout=2)
        time.sleep(0.1)
    assert answer is not None and answer[0] == 408, answer
    assert "bytes of a chunked body, unfinished" in json.loads(answer[2])["detail"]
    conn.close()

    slow = RawConn(srv.port)  # slow, but all of it well within BODY_TIMEOUT: served
    slow.send_head("POST", "/predict", len(BODY))
    for i in range(0, len(BODY), len(BODY) // 3 + 1):
        slow.send(BODY[i:i + len(BODY) // 3 + 1])
        time.sleep(0.2)
    assert slow.read_response(timeout=5)[0] == 200
    slow.close()


def test_connections_beyond_the_cap_get_503_with_retry_after(srv: RuntimeServer) -> None:
    _wait_connections_closed(srv)  # those of the tests before, on the server's side too
    held = [RawConn(srv.port) for _ in range(CAP)]
    for c in held:
        assert c.request("POST", "/predict", PREDICT)[0] == 200
    extra = RawConn(srv.port)
    status, headers, body = extra.request("POST", "/predict", PREDICT,
                                          headers={"X-Correlation-ID": "over-1"})
    doc = json.loads(body)
    assert status == 503, (status, body)
    assert headers["retry-after"] == "1" and headers["connection"] == "close"
    assert "MAX_CONNECTIONS_PER_WORKER" in doc["detail"] and doc["correlation_id"] == "over-1"
    assert extra.wait_closed(3) == "eof"
    extra.close()
    v2 = RawConn(srv.port)
    status, _, body = v2.request("POST", "/v2/models/m1/infer", {"inputs": []})
    assert status == 503 and "connection limit" in json.loads(body)["error"]
    v2.close()
    live = RawConn(srv.port)  # liveness still answers: restarting would not add capacity
    assert live.request("GET", "/v2/health/live")[0] == 200
    live.close()
    # the connections already held are served as before (uvicorn's limit_concurrency
    # would answer 503 on them too)
    for c in held:
        assert c.request("POST", "/predict", PREDICT)[0] == 200
    held.pop().close()
    _wait_connections_closed(srv, held=len(held))
    again = RawConn(srv.port)
    assert again.request("POST", "/predict", PREDICT)[0] == 200
    again.close()
    for c in held:
        c.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_body_written_in_full_still_reads_its_413(srv: RuntimeServer,
                                                               chunked: bool) -> None:
    big = b"[" + b"0.5," * (4 * 1024 * 1024) + b"0]"  # ~16 MiB, over MAX_BODY
    conn = RawConn(srv.port)
    if chunked:
        conn.send_head("POST", "/predict", chunked=True)
        for i in range(0, len(big), 1 << 20):
            piece = big[i:i + (1 << 20)]
            conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
    else:
        conn.send_head("POST", "/predict", len(big))
        conn.send(big)  # a reset would make this raise
    status, _, body = conn.read_response(timeout=10)
    assert status == 413 and f"limit of {MAX_BODY} bytes" in json.loads(body)["detail"]
    if chunked:
        # left idle after the dropped body: uvicorn's keep-alive timeout (5 s) still closes
        # it (the body's bytes after the 413 had cancelled that timer) — closes, not only
        # sends a FIN and reads on
        assert conn.wait_closed(5 + MARGIN) == "eof"
        assert conn.closed_by_server(3), "a FIN, but the server still holds the connection"
    else:
        # the rest of the body was read and dropped: the connection carries the next request
        assert conn.request("POST", "/predict", PREDICT)[0] == 200
    conn.close()


def test_an_idle_connection_after_a_dropped_body_is_closed_not_half_closed(
        srv: RuntimeServer) -> None:
    """A 413 sent before the body, the body then read and dropped in full, the connection
    left idle: uvicorn's keep-alive timeout (5 s) closes it. It used to only send a FIN and
    go on reading (the dropped body looked unfinished) with no deadline: the connection
    stayed open for good, counted against the cap and delayed a shutdown."""
    _wait_connections_closed(srv)
    conn = RawConn(srv.port)
    big = b"0" * (256 << 10)
    conn.send_head("POST", "/predict", len(big))
    status, headers, _ = conn.read_response(timeout=10)  # answered before the body
    assert status == 413 and headers.get("connection") != "close"
    conn.send(big)  # read and dropped
    assert conn.wait_closed(5 + MARGIN) == "eof"
    assert conn.closed_by_server(3), "a FIN, but the server still holds the connection"
    _wait_connections_closed(srv)
    conn.close()


def test_a_head_split_across_reads_with_a_large_rest_is_not_431(srv: RuntimeServer) -> None:
    """The head's first bytes in one read; the rest of it and the body (together over
    MAX_HEAD_BYTES, the head alone under it) in the next: a valid request, served. The
    head bound used to count the body's bytes too and close the connection unanswered."""
    from serving_runtime.server.http_protocol import MAX_HEAD_BYTES

    body = BODY + b" " * (MAX_BODY - 10 - len(BODY))  # JSON may end in whitespace
    pad = MAX_HEAD_BYTES - 1000
    conn = RawConn(srv.port)
    conn.send(b"POST /predict HTTP/1.1\r\nHost: t\r\n")
    time.sleep(0.3)  # read on its own
    rest = (b"Content-Type: application/json\r\nContent-Length: %d\r\nX-Pad: %s\r\n\r\n"
            % (len(body), b"a" * pad))
    assert len(rest) + len(body) > MAX_HEAD_BYTES
    conn.send(rest + body)
    status, _, answer = conn.read_response(timeout=10)
    assert status == 200, (status, answer)
    assert conn.request("POST", "/predict", PREDICT)[0] == 200  # and kept alive
    conn.close()


def test_a_pipelined_request_with_a_body_is_answered(srv: RuntimeServer) -> None:
    """A second request's head sent right behind a first request (pipelined), its body
    once the first is answered: that body is the second request's, not one to drop. It
    used to be dropped when the first response completed, the request then hung."""
    conn = RawConn(srv.port)
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    conn.send(head + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
              + head + b"Content-Length: %d\r\nX-Correlation-ID: piped-2\r\n\r\n" % len(BODY))
    assert conn.read_response(timeout=10)[0] == 200
    time.sleep(0.2)
    conn.send(BODY)
    status, headers, answer = conn.read_response(timeout=BODY_TIMEOUT + MARGIN)
    assert status == 200 and headers["x-correlation-id"] == "piped-2", (status, answer)
    assert conn.request("POST", "/predict", PREDICT)[0] == 200
    conn.close()


def test_reading_a_body_only_to_drop_it_is_bounded(srv: RuntimeServer) -> None:
    """A 413 for a declared 1 GiB body: the server reads and drops at most 64 MiB
    (DISCARD_MAX_BYTES) of it, then closes; it does not read on for as long as the client
    sends."""
    conn = RawConn(srv.port, timeout=10)
    conn.send_head("POST", "/predict", 1 << 30)
    piece = b"0" * (1 << 20)
    sent = 0
    try:
        while sent < 256 << 20:
            conn.send(piece)
            sent += len(piece)
    except OSError:
        pass
    conn.close()
    print(f"\nsent {sent >> 20} MiB of a declared 1 GiB body before the server closed")
    assert sent < 128 << 20, "the server kept reading a body it had refused"


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True])
def test_a_413_while_draining_closes_with_a_fin_after_the_body(
        start_server, models_dir: Path, chunked: bool) -> None:
    """Draining, every answer says Connection: close; closing right after a 413 sent
    before the body arrived would reset the connection while the client still writes."""
    server: RuntimeServer = start_server(
        models_dir, env={"DRAIN_SECONDS": "20"}, args=["--max-body-bytes", str(MAX_BODY)])
    server.wait_ready()
    server.client.close()
    keep = RawConn(server.port)  # keeps the drain going
    assert keep.request("GET", "/v2/health/live")[0] == 200
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while True:
        probe = RawConn(server.port)
        ready = probe.request("GET", "/v2/health/ready")[0]
        probe.close()
        if ready == 503:
            break
        assert time.monotonic() < deadline, "not draining"
        time.sleep(0.05)
    big = b"0" * (16 << 20)
    conn = RawConn(server.port)
    if chunked:
        conn.send_head("POST", "/predict", chunked=True)
        for i in range(0, len(big), 1 << 20):
            conn.send(b"100000\r\n" + big[i:i + (1 << 20)] + b"\r\n")
        conn.send(b"0\r\n\r\n")
    else:
        conn.send_head("POST", "/predict", len(big))
        conn.send(big)
    status, headers, _ = conn.read_response(timeout=10)
    assert status == 413 and headers["connection"] == "close"
    assert conn.wait_closed(5) == "eof"
    conn.close()
    keep.close()
    assert server.proc.wait(15) == 0


@pytest.mark.slow
def test_the_flags_reach_every_worker(start_server, models_dir: Path) -> None:
    """With --workers the limits travel to the worker processes through the environment;
    connections land on either worker, so several silent ones all have to be cut."""
    server: RuntimeServer = start_server(models_dir, args=[
        "--workers", "2", "--header-timeout-seconds", "1", "--body-timeout-seconds", "1",
        "--max-connections-per-worker", "100"])
    server.wait_ready()
    silent = [RawConn(server.port) for _ in range(6)]
    t0 = time.monotonic()
    ends = [c.wait_closed(1 + MARGIN) for c in silent]
    assert ends == ["eof"] * 6, ends
    assert time.monotonic() - t0 >= 0.7
    short = RawConn(server.port)
    short.send_head("POST", "/predict", len(BODY))
    status, _, body = short.read_response(timeout=1 + MARGIN)
    assert status == 408 and "after 1 s" in json.loads(body)["detail"]
    for c in [*silent, short]:
        c.close()
