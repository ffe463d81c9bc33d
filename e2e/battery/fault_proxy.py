"""A TCP proxy on loopback that can make its open connections go silent.

A fake, used because the fault it causes cannot be caused otherwise here: a watch stream
that stays open but delivers nothing (a dead NAT entry, a half-open connection behind a
load balancer). Bytes pass through untouched (TLS stays end to end); `silence()` stops
forwarding on every connection open at that moment without closing it, while connections
opened afterwards work normally.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit


class SilencingProxy:
    def __init__(self, upstream_url: str) -> None:
        up = urlsplit(upstream_url)
        self.upstream = (up.hostname or "127.0.0.1", up.port or 443)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{up.scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
        self._generation = 0  # connections from an older generation are silenced
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.connections = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> int:
        """Silence every open connection; returns how many were open."""
        with self._lock:
            self._generation += 1
            return sum(1 for s in self._socks if s.fileno() != -1) // 2

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for s in self._socks:
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                gen = self._generation
                self._socks += [client, server]
                self.connections += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, gen), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, gen: int) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._generation != gen:
                    # Silenced: swallow this and everything after it, keep both ends open.
                    while src.recv(65536):
                        pass
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if self._generation == gen:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
