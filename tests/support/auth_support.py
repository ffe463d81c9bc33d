"""Helpers of the authentication and TLS tests (tests/server/test_auth.py, test_tls.py,
tests/client/test_auth_client.py): a private CA issuing server certificates for
127.0.0.1 (tests/support/tls_support.py, re-exported here), token directories laid out as
a mounted Kubernetes Secret, a small model, and a runtime server reached over https
and/or with a token."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.raw_http import small_forest
from tests.support.runtime_helpers import REPO, RuntimeServer, free_port
from tests.support.tls_support import CA, KeyType, issue, make_ca

__all__ = ["CA", "INVALID_CHALLENGE", "REALM_CHALLENGE", "ROW", "KeyType", "SecureServer",
           "bearer", "client_context", "common_name", "issue", "make_ca", "peer_certificate",
           "rotate_secret", "run_to_exit", "secret_dir", "small_model", "wait_until"]

REALM_CHALLENGE = 'Bearer realm="n1v1"'
INVALID_CHALLENGE = 'Bearer realm="n1v1", error="invalid_token"'


def client_context(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.path))


def peer_certificate(port: int, ca: CA) -> dict:
    """The certificate a new TLS connection to 127.0.0.1:`port` is shown (verified)."""
    import socket

    ctx = client_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cert = tls.getpeercert()
    assert cert is not None
    return cert


def common_name(cert: dict) -> str:
    return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")


def secret_dir(root: Path, tokens: dict[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a Secret: `..<ts>/<key>` files, a
    `..data` symlink to that directory, and `<key>` symlinks through `..data`."""
    root.mkdir(parents=True, exist_ok=True)
    rotate_secret(root, tokens)
    return root


def rotate_secret(root: Path, tokens: dict[str, str]) -> None:
    """The kubelet's atomic update: a new timestamped directory, `..data` swapped to it
    with a rename, key symlinks added/removed, the old directory deleted."""
    ts = root / f"..{time.time_ns()}"
    ts.mkdir()
    for key, value in tokens.items():
        (ts / key).write_text(value)
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(ts.name)
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.replace(tmp_link, root / "..data")
    for key in tokens:
        link = root / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    for entry in root.iterdir():
        if not entry.name.startswith(".") and entry.name not in tokens:
            entry.unlink()
    if old is not None:
        for f in (root / old).iterdir():
            f.unlink()
        (root / old).rmdir()


def small_model(models_dir: Path, name: str = "m") -> Any:
    """A 5-tree random forest on f0..f2, saved as `models_dir/name` (raw_http's helper)."""
    return small_forest(models_dir, name, n_features=3, n_estimators=5)


ROW = {"f0": [1.5], "f1": [0.0], "f2": [0.0]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class SecureServer(RuntimeServer):
    """A RuntimeServer whose own client speaks https (verified against `ca`) and/or
    sends `token`, so that wait_live/wait_ready work whatever AUTH_HEALTH says."""

    def __init__(self, models_dir: Path, *, ca: CA | None = None, token: str | None = None,
                 **kw: object) -> None:
        super().__init__(models_dir, **kw)  # type: ignore[arg-type]
        self.client.close()
        if ca is not None:
            self.url = f"https://127.0.0.1:{self.port}"
        self.ca = ca
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   verify=client_context(ca) if ca else True,
                                   headers=bearer(token) if token else None)


def run_to_exit(models_dir: Path, env: dict[str, str], timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
    """`python -m serving_runtime` that is expected to stop by itself (a bad setting)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("REMOTE_INFERENCE")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "serving_runtime", "--models-dir", str(models_dir),
         "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout)


def wait_until(predicate, timeout: float = 10, step: float = 0.1) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `predicate()` was true; AssertionError after `timeout`."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(step)
