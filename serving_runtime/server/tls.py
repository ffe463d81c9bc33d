"""TLS of the runtime's ports (TLS_CERT_FILE, TLS_KEY_FILE; docs/runtime.md).

`ReloadingTLS` owns one `ssl.SSLContext` for the HTTP port (TLS 1.2 at least) and keeps
it current: `maybe_reload()` (called from the server's tick, see uvicorn_server.py) looks
at the two files at most every RELOAD_CHECK_SECONDS and, when either changed, loads the
pair again into the SAME context, so every new handshake presents the new certificate
while open connections keep theirs. A pair that does not load (a key that does not match
the certificate mid-rotation, a truncated file) is refused with a warning and the old one
keeps serving; it is tried again at the next change.

Every worker process builds its own (WORKERS > 1): an SSLContext cannot cross a fork
usefully, and each one reloads by itself.

The gRPC port reads the same pair through `grpc_pair()` (grpc_server.py).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("serving_runtime.server.tls")

RELOAD_CHECK_SECONDS = 2.0
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def _stamp(path: Path) -> tuple[int, int, int]:
    s = path.stat()  # follows symlinks: a Secret's key points into its `..data` directory
    return (s.st_ino, s.st_size, s.st_mtime_ns)


def new_server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    # HTTP/1.1 only: uvicorn speaks no HTTP/2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def check_pair(cert: Path, key: Path) -> None:
    """Raise ValueError naming the files when the pair does not load (start-up: exit 2)."""
    try:
        new_server_context().load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS_CERT_FILE {cert} and TLS_KEY_FILE {key} do not load as a "
                         f"certificate and its key: {exc}") from None


class ReloadingTLS:
    def __init__(self, cert: Path, key: Path, *,
                 check_seconds: float = RELOAD_CHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.check_seconds = check_seconds
        self.clock = clock
        self.context = new_server_context()
        self._stamps = self._current_stamps()
        pem = self._snapshot()
        self._load(self.context, *pem)  # at start-up a failure is fatal (raised)
        self.pem = pem  # the pair being served: (certificate, key) bytes, for gRPC
        self.generation = 0  # +1 on each successful reload
        self._next_check = self.clock() + check_seconds

    def _current_stamps(self) -> tuple[object, ...] | None:
        try:
            return (_stamp(self.cert), _stamp(self.key))
        except OSError:
            return None

    def _snapshot(self) -> tuple[bytes, bytes]:
        # Both files read once, then checked and loaded from these bytes: a rotation
        # half-way through cannot pair the old certificate with the new key.
        return self.cert.read_bytes(), self.key.read_bytes()

    @staticmethod
    def _load(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
        # load_cert_chain takes paths only: a private temporary directory (0700, files
        # 0600), removed at once
        with tempfile.TemporaryDirectory(prefix="n1v1-tls-") as tmp:
            cert_path, key_path = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(cert_path, key_path)

    def maybe_reload(self) -> bool:
        """Reload the pair when a file changed (looked at once per check_seconds at most);
        True when a new pair is now served."""
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.check_seconds
        stamps = self._current_stamps()
        if stamps is None or stamps == self._stamps:
            return False  # unchanged, or a file missing for a moment mid-rotation
        self._stamps = stamps
        try:
            pem = self._snapshot()
            # checked on a scratch context first: a failed load_cert_chain can leave a
            # context with the new certificate and no matching key
            self._load(new_server_context(), *pem)
            self._load(self.context, *pem)
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS certificate files changed but do not load; the previous "
                        "certificate keeps serving", extra={
                            "cert_file": str(self.cert), "key_file": str(self.key),
                            "error": str(exc)[:300]})
            return False
        self.pem = pem
        self.generation += 1
        log.info("TLS certificate reloaded", extra={"cert_file": str(self.cert)})
        return True


def from_settings(settings: object) -> ReloadingTLS | None:
    """The HTTP port's TLS, or None when TLS_CERT_FILE/TLS_KEY_FILE are not set (the
    settings already refused only one of them)."""
    cert = getattr(settings, "tls_cert_file", None)
    key = getattr(settings, "tls_key_file", None)
    if cert is None or key is None:
        return None
    return ReloadingTLS(cert, key)


__all__ = ["MINIMUM_VERSION", "RELOAD_CHECK_SECONDS", "ReloadingTLS", "check_pair",
           "from_settings", "new_server_context"]
