"""GET /healthz of a standby replica (kopf's liveness endpoint serves it once leading)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .names import OPERATOR_HEALTH_PATH


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        ok = self.path.split("?")[0] == OPERATOR_HEALTH_PATH
        body = json.dumps({"role": "standby"} if ok else {"error": "not found"}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # probes every few seconds: no access log
        pass


class StandbyHealth:
    """A standby waits for the Lease and is healthy meanwhile: probes must not restart it."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="standby-health")
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
