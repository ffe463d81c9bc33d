"""HTTP/1.1 over a raw socket, for tests that must see what a client library hides: the
Connection header, whether the server closed with a FIN (EOF) or a reset, a head or body
sent byte by byte, a body shorter than its Content-Length. Also small process figures
(RSS, file-descriptor limit) for the connection tests. Imported as a plain module."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import socket
import time
from pathlib import Path
from typing import Any

ROW = {"f0": [0.1], "f1": [-0.3], "f2": [1.2], "f3": [0.0]}
PREDICT = {"model_name": "m1", "features": ROW}


def small_forest(root: Path, name: str = "m1", *, n_features: int = 4,
                 n_estimators: int = 10) -> Any:
    """`root/name`: a forest of `n_estimators` trees over f0..f<n_features - 1>, saved as
    version 1; the fitted estimator (what a test compares the server's answers with)."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from serving_runtime import save_model

    X, y = make_classification(n_samples=300, n_features=n_features,
                               n_redundant=min(2, n_features - 2), random_state=0)
    est = RandomForestClassifier(n_estimators=n_estimators, random_state=0).fit(X, y)
    save_model(est, root / name, version="1", sample=X[:5])
    return est


def small_models(root: Path) -> Path:
    """`root/m1`: a 10-tree forest over f0..f3 (what these tests predict with)."""
    small_forest(root)
    return root


def readable(sock: socket.socket, timeout: float) -> bool:
    """Data, EOF or a reset waiting on `sock` within `timeout` (poll: select() cannot
    take descriptors above 1023, which a flood test reaches)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


class RawConn:
    """One client connection; responses are parsed by Content-Length (the runtime always
    sends one)."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_head(self, method: str, path: str, length: int | None = None, *,
                  chunked: bool = False, headers: dict[str, str] | None = None) -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
        if length is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        if chunked:
            head += "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        self.sock.sendall(head.encode() + b"\r\n")

    def read_response(self, timeout: float | None = None) -> tuple[int, dict[str, str], bytes]:
        """The next response; ConnectionError when the server closes first, TimeoutError
        when nothing complete arrives within `timeout` (default: the socket's)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        self.buf = rest
        while len(self.buf) < length:
            self._fill(deadline)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def _fill(self, deadline: float | None) -> None:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not readable(self.sock, left):
                raise TimeoutError(f"no complete response in time (got {self.buf[:80]!r})")
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"server closed the connection first (got {self.buf[:80]!r})")
        self.buf += data

    def request(self, method: str, path: str, doc: object = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        body = None if doc is None else json.dumps(doc).encode()
        self.send_head(method, path, None if body is None else len(body), headers=headers)
        if body:
            self.sock.sendall(body)
        return self.read_response()

    def wait_closed(self, timeout: float) -> str:
        """How the server ends the connection within `timeout`: "eof" (FIN), "reset", or
        "open" (nothing arrived); unread response bytes are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not readable(self.sock, left):
                return "open"
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return "reset"
            if not data:
                return "eof"

    def closed_by_server(self, timeout: float) -> bool:
        """After the server's FIN (`wait_closed` said "eof"): whether the server closed its
        socket, rather than only half-closing it and reading on. Data sent to a closed
        socket is answered with a reset, which the next send reports (EPIPE); a CRLF is
        what a parser between two requests skips."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.sendall(b"\r\n")
            except OSError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def is_open(self) -> bool:
        """Nothing to read (no EOF, no reset, no bytes) right now."""
        return not readable(self.sock, 0)

    def close(self) -> None:
        self.sock.close()


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def socket_fds(pid: int) -> int:
    """Sockets process `pid` holds open (listening ones and connections), from /proc."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


def wait_socket_fds(pid: int, at_most: int, timeout: float) -> int:
    """Poll until process `pid` holds at most `at_most` sockets or `timeout` passes; the
    last count."""
    deadline = time.monotonic() + timeout
    while True:
        count = socket_fds(pid)
        if count <= at_most or time.monotonic() >= deadline:
            return count
        time.sleep(0.05)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (children started later
    inherit it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
