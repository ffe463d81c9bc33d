"""Bearer-token authentication of the runtime's APIs (AUTH_TOKENS_DIR; docs/runtime.md).

Framework-free: the FastAPI middleware (app.py), the hot-path layer (hot_path.py) and the
gRPC interceptor (grpc_server.py) all ask `Authenticator.check` and turn its verdict into
their own 401 / UNAUTHENTICATED answer.

The tokens are the regular files of a directory, one token per file: a mounted Kubernetes
Secret, each key a file. Its `..data` symlink and `..<timestamp>` directories (how the
kubelet swaps a rotated Secret in atomically) start with "." and are skipped. Only the
SHA-256 digest of each token is kept in memory; a presented token is hashed and compared
with every stored digest by `hmac.compare_digest`, all of them each time, so neither the
timing nor an early exit tells which one matched or how much of one did.

Rotation needs no restart: the directory is looked at again at most once per
RESCAN_SECONDS (a stat of each entry; the files are read again only when one changed).
A directory that turns empty or unreadable refuses every protected request (fail closed)
and says so once in the log; never a token value, anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from serving_runtime.files import file_stamp

log = logging.getLogger("serving_runtime.server.auth")

REALM = "n1v1"
#: a rotation (a new file, a changed one, a removed one) takes effect within this long
RESCAN_SECONDS = 1.0
#: a token file larger than this is not a token (and is not read whole into memory)
MAX_TOKEN_BYTES = 4096

Failure = Literal["missing", "invalid"]
MISSING: Failure = "missing"
INVALID: Failure = "invalid"

#: WWW-Authenticate of a 401 (RFC 6750 section 3): no credentials at all get the bare
#: challenge, wrong or malformed ones `error="invalid_token"`
CHALLENGE: dict[Failure, str] = {
    MISSING: f'Bearer realm="{REALM}"',
    INVALID: f'Bearer realm="{REALM}", error="invalid_token"',
}
MESSAGE: dict[Failure, str] = {
    MISSING: "authentication required: send the header 'Authorization: Bearer <token>'",
    INVALID: "invalid token: the bearer token of the Authorization header is not accepted",
}

#: the health endpoints AUTH_HEALTH=open leaves open (/health/live and /health/ready are
#: not routes today; listed so that adding them cannot silently put them behind a token)
HEALTH_PATHS = frozenset({"/health", "/health/live", "/health/ready",
                          "/v2/health/live", "/v2/health/ready"})
METRICS_PATHS = frozenset({"/metrics"})


class TokenDirError(ValueError):
    """AUTH_TOKENS_DIR holds no usable token (start-up: the process exits 2)."""


def _signature(directory: Path) -> tuple[object, ...]:
    """What changes when a token file is added, removed, replaced or rewritten: the
    directory's own stamp (new/removed entries, the kubelet's `..data` swap) and each
    candidate file's (serving_runtime/files.py; following symlinks: a Secret's key is a
    symlink into the `..data` directory)."""
    entries: list[tuple[object, ...]] = [("", file_stamp(directory))]
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            try:
                entries.append((entry.name, file_stamp(entry.path)))
            except OSError:
                continue
    return tuple(sorted(entries, key=repr))


def read_token_digests(directory: Path) -> tuple[bytes, ...]:
    """SHA-256 digests of the tokens in `directory` (one per non-empty regular file whose
    name does not start with "."); raises OSError when the directory cannot be read."""
    digests: list[bytes] = []
    with os.scandir(directory) as it:
        names = sorted(e.name for e in it if not e.name.startswith("."))
    for name in names:
        path = directory / name
        try:
            if not path.is_file() or path.stat().st_size > MAX_TOKEN_BYTES:
                continue
            token = path.read_bytes().strip()
        except OSError:
            continue  # e.g. removed between the listing and the read
        if token:
            digests.append(hashlib.sha256(token).digest())
    return tuple(dict.fromkeys(digests))  # the same token in two keys counts once


def check_token_dir(directory: Path) -> int:
    """The number of tokens in `directory`; TokenDirError (naming the directory, never a
    token) when it cannot be read or holds none."""
    try:
        count = len(read_token_digests(directory))
    except OSError as exc:
        raise TokenDirError(f"AUTH_TOKENS_DIR {directory} cannot be read: "
                            f"{exc.strerror or exc}") from None
    if count == 0:
        raise TokenDirError(f"AUTH_TOKENS_DIR {directory} holds no token (each token is "
                            f"a non-empty file whose name does not start with '.')")
    return count


class TokenStore:
    """The accepted tokens' digests, re-read from `directory` when it changes (looked at
    no more often than every `rescan_seconds`)."""

    def __init__(self, directory: Path, *, rescan_seconds: float = RESCAN_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.rescan_seconds = rescan_seconds
        self.clock = clock
        self._digests: tuple[bytes, ...] = ()
        self._signature: tuple[object, ...] | None = None
        self._next_scan = 0.0
        self._failing: str | None = None  # the reason last logged, so it is logged once
        self.refresh(force=True)

    @property
    def count(self) -> int:
        return len(self._digests)

    def refresh(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_scan:
            return
        self._next_scan = now + self.rescan_seconds
        try:
            signature = _signature(self.directory)
            if signature == self._signature:
                return
            digests = read_token_digests(self.directory)
            self._signature = signature
        except OSError as exc:
            self._signature = None
            self._set((), f"cannot be read: {exc.strerror or type(exc).__name__}")
            return
        self._set(digests, None if digests else "holds no token")

    def _set(self, digests: tuple[bytes, ...], problem: str | None) -> None:
        changed = digests != self._digests
        self._digests = digests
        if problem is not None:
            if problem != self._failing:
                log.error("AUTH_TOKENS_DIR %s: every protected request is refused (401) "
                          "until it holds a token again", problem,
                          extra={"auth_tokens_dir": str(self.directory)})
            self._failing = problem
            return
        if self._failing is not None:
            log.info("AUTH_TOKENS_DIR holds tokens again",
                     extra={"auth_tokens_dir": str(self.directory), "tokens": len(digests)})
        elif changed and self._signature is not None:
            log.info("accepted tokens re-read", extra={
                "auth_tokens_dir": str(self.directory), "tokens": len(digests)})
        self._failing = None

    def accepts(self, token: bytes) -> bool:
        """Whether `token` is one of the stored ones, in time independent of which."""
        self.refresh()
        presented = hashlib.sha256(token).digest()
        ok = False
        for stored in self._digests:  # every digest, no early exit
            ok |= hmac.compare_digest(presented, stored)
        return ok


def bearer_token(header: bytes | str | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value, else None (another scheme,
    an empty token, more than one word)."""
    if header is None:
        return None
    raw = header.encode("latin-1", "replace") if isinstance(header, str) else header
    scheme, _, token = raw.strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token or b" " in token:
        return None
    return token


class Authenticator:
    """Which paths need a token (AUTH_HEALTH, AUTH_METRICS) and whether a request has
    one. `on_failure` is told each refusal's reason (the auth_failures_total counter)."""

    def __init__(self, store: TokenStore, *, health_open: bool = True,
                 metrics_open: bool = True,
                 on_failure: Callable[[Failure], None] | None = None) -> None:
        self.store = store
        open_paths: set[str] = set()
        if health_open:
            open_paths |= HEALTH_PATHS
        if metrics_open:
            open_paths |= METRICS_PATHS
        self.open_paths = frozenset(open_paths)
        self.on_failure = on_failure

    def protects(self, path: str) -> bool:
        return path not in self.open_paths

    def check(self, header: bytes | str | None) -> Failure | None:
        """None when `header` (the Authorization value, None when absent) carries an
        accepted token, else why not."""
        if header is None:
            failure: Failure = MISSING
        else:
            token = bearer_token(header)
            if token is not None and self.store.accepts(token):
                return None
            failure = INVALID
        if self.on_failure is not None:
            self.on_failure(failure)
        return failure

    def check_asgi(self, scope_headers: Iterable[tuple[bytes, bytes]]) -> Failure | None:
        """`check` of an ASGI scope's headers (the first Authorization header)."""
        for key, value in scope_headers:
            if key == b"authorization":
                return self.check(value)
        return self.check(None)


def from_settings(settings: object, on_failure: Callable[[Failure], None] | None = None
                  ) -> Authenticator | None:
    """The runtime's Authenticator, or None when AUTH_TOKENS_DIR is not set (no auth)."""
    directory = getattr(settings, "auth_tokens_dir", None)
    if directory is None:
        return None
    return Authenticator(
        TokenStore(Path(directory)),
        health_open=getattr(settings, "auth_health", "open") == "open",
        metrics_open=getattr(settings, "auth_metrics", "open") == "open",
        on_failure=on_failure)


def challenge_headers(failure: Failure) -> list[tuple[bytes, bytes]]:
    return [(b"www-authenticate", CHALLENGE[failure].encode("ascii"))]


__all__ = ["CHALLENGE", "HEALTH_PATHS", "INVALID", "MESSAGE", "MISSING", "Authenticator",
           "Failure", "TokenDirError", "TokenStore", "bearer_token", "challenge_headers",
           "check_token_dir", "from_settings", "read_token_digests"]
