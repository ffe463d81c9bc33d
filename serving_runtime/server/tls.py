"""TLS of the runtime's ports (TLS_CERT_FILE, TLS_KEY_FILE; docs/runtime.md).

Both ports watch the same two files, each with its own watcher: the files are looked at
(one `stat` each, serving_runtime/files.py) at most every RELOAD_CHECK_SECONDS and, when
either changed, the pair is loaded again. A pair that does not load (a key that does not
match the certificate mid-rotation, a truncated file) is refused with a warning and the
old one keeps serving; it is tried again at the next change.

- HTTP port (`ReloadingTLS`, driven by the server's tick, uvicorn_server.py): each
  successful reload builds a FRESH `ssl.SSLContext`. Loading into the context being served
  would not replace the old certificate when the key type changes (OpenSSL keeps one
  certificate per key type: an EC pair followed by an RSA one leaves the EC certificate
  served to clients that offer ECDSA). The listening socket keeps the context it was
  created with; that context's `sni_callback`, which OpenSSL runs for every ClientHello
  (with a server name or without one, e.g. a client that connects to an IP address), moves
  each new handshake to the newest context. Open connections keep theirs.
- gRPC port (`PemPair`, grpc_server.py): grpc's dynamic credentials take the pair as PEM
  bytes; each reload checks the pair by loading it into a throw-away context (so both
  ports refuse the same pairs) and keeps the bytes.

The key is read from its own path only (`load_cert_chain` on the real files): never
copied anywhere, in particular not to /tmp (in a pod a disk-backed emptyDir). A rotation
caught half-way (the certificate read before the swap, the key after) shows as a stamp
that changed between the `stat` before the load and the one after; the load is then done
again (LOAD_ATTEMPTS at most), and a pair still changing keeps the old one serving.

Every worker process builds its own watchers (WORKERS > 1): an SSLContext cannot cross a
fork usefully, and each one reloads by itself. Every context has TLS 1.2 as its minimum.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving_runtime.files import Stamp, file_stamp

log = logging.getLogger("serving_runtime.server.tls")

RELOAD_CHECK_SECONDS = 2.0
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: loads of a pair whose files changed while being read, before the old pair is kept
LOAD_ATTEMPTS = 3


class PairChanging(OSError):
    """The files changed during each of LOAD_ATTEMPTS loads (a rotation in progress)."""


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


class _WatchedPair:
    """The two files, loaded again when one changed (see the module's docstring)."""

    #: whether a load also keeps the files' bytes (grpc wants PEM bytes)
    keep_pem = False

    def __init__(self, cert: Path, key: Path, *,
                 check_seconds: float = RELOAD_CHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.check_seconds = check_seconds
        self.clock = clock
        self.generation = 0  # +1 on each successful reload
        # at start-up a failure is fatal (raised)
        self._stamps, ctx, pem = self._load()
        self._take(ctx, pem)
        self._next_check = self.clock() + check_seconds

    def _take(self, ctx: ssl.SSLContext, pem: tuple[bytes, bytes] | None) -> None:
        """Serve this newly loaded pair (at start-up and after each reload)."""
        raise NotImplementedError

    def _current_stamps(self) -> tuple[Stamp, Stamp]:
        return (file_stamp(self.cert), file_stamp(self.key))

    def _load(self) -> tuple[tuple[Stamp, Stamp], ssl.SSLContext, tuple[bytes, bytes] | None]:
        """A fresh context with the pair loaded from the files themselves, the files'
        stamps, and (keep_pem) their bytes; the stamps before and after must agree."""
        for _ in range(LOAD_ATTEMPTS):
            before = self._current_stamps()
            ctx = new_server_context()
            try:
                ctx.load_cert_chain(self.cert, self.key)
                pem = (self.cert.read_bytes(), self.key.read_bytes()) if self.keep_pem else None
            except (OSError, ssl.SSLError):
                if self._current_stamps() != before:
                    continue  # torn by a rotation: read again
                raise
            after = self._current_stamps()
            if after == before:
                return after, ctx, pem
        raise PairChanging(f"{self.cert} and {self.key} changed while being read, "
                           f"{LOAD_ATTEMPTS} times")

    def maybe_reload(self) -> bool:
        """Reload the pair when a file changed (looked at once per check_seconds at most);
        True when a new pair is now served."""
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.check_seconds
        try:
            stamps = self._current_stamps()
        except OSError:
            return False  # a file missing for a moment mid-rotation
        if stamps == self._stamps:
            return False
        try:
            stamps, ctx, pem = self._load()
        except (OSError, ssl.SSLError) as exc:
            self._stamps = stamps  # said once; tried again at the next change
            log.warning("TLS certificate files changed but do not load; the previous "
                        "certificate keeps serving", extra={
                            "cert_file": str(self.cert), "key_file": str(self.key),
                            "error": str(exc)[:300]})
            return False
        self._stamps = stamps
        self._take(ctx, pem)
        self.generation += 1
        log.info("TLS certificate reloaded", extra={"cert_file": str(self.cert)})
        return True


class ReloadingTLS(_WatchedPair):
    """The HTTP port's TLS. `context` is the one the listening socket is created with
    (never reloaded itself); `current` the newest loaded one, which every new handshake
    is moved to by `context`'s sni_callback."""

    def __init__(self, cert: Path, key: Path, **kw: Any) -> None:
        super().__init__(cert, key, **kw)
        self.context = self.current
        self.context.sni_callback = self._select

    def _take(self, ctx: ssl.SSLContext, pem: tuple[bytes, bytes] | None) -> None:
        self.current = ctx

    def _select(self, conn: ssl.SSLSocket | ssl.SSLObject, server_name: str | None,
                ctx: ssl.SSLContext) -> None:
        # called by OpenSSL for each ClientHello, SNI or not (server_name None)
        current = self.current
        if current is not ctx:
            conn.context = current


class PemPair(_WatchedPair):
    """The gRPC port's TLS: `pem`, the (certificate, key) bytes being served; each pair
    is checked in a throw-away context before it is taken."""

    keep_pem = True

    def _take(self, ctx: ssl.SSLContext, pem: tuple[bytes, bytes] | None) -> None:
        assert pem is not None
        self.pem = pem


def _files(settings: object) -> tuple[Path, Path] | None:
    cert = getattr(settings, "tls_cert_file", None)
    key = getattr(settings, "tls_key_file", None)
    if cert is None or key is None:
        return None
    return Path(cert), Path(key)


def from_settings(settings: object) -> ReloadingTLS | None:
    """The HTTP port's TLS, or None when TLS_CERT_FILE/TLS_KEY_FILE are not set (the
    settings already refused only one of them)."""
    files = _files(settings)
    return ReloadingTLS(*files) if files is not None else None


def pem_pair(settings: object) -> PemPair | None:
    """The gRPC port's TLS pair, or None without TLS_CERT_FILE/TLS_KEY_FILE."""
    files = _files(settings)
    return PemPair(*files) if files is not None else None


__all__ = ["LOAD_ATTEMPTS", "MINIMUM_VERSION", "RELOAD_CHECK_SECONDS", "PairChanging",
           "PemPair", "ReloadingTLS", "check_pair", "from_settings", "new_server_context",
           "pem_pair"]
