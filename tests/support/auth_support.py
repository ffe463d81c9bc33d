"""Helpers of the authentication and TLS tests (tests/server/test_auth.py, test_tls.py,
tests/client/test_auth_client.py): a private CA issuing server certificates for
127.0.0.1, token directories laid out as a mounted Kubernetes Secret, a small model, and a
runtime server reached over https and/or with a token."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.support.runtime_helpers import REPO, RuntimeServer, free_port

REALM_CHALLENGE = 'Bearer realm="n1v1"'
INVALID_CHALLENGE = 'Bearer realm="n1v1", error="invalid_token"'


@dataclass
class CA:
    cert_pem: bytes
    key: object  # an EC private key
    path: Path  # the CA certificate's PEM file (what clients trust)


def make_ca(tmp: Path, name: str = "n1v1 test CA") -> CA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "ca.pem"
    path.write_bytes(pem)
    return CA(pem, key, path)


def issue(ca: CA, cert_path: Path, key_path: Path, *, cn: str = "runtime-a",
          expired: bool = False, ips: Sequence[str] = ("127.0.0.1",),
          dns: Sequence[str] = ("localhost",)) -> int:
    """A server certificate for `ips` and `dns` names signed by `ca`, written to the two
    paths (the certificate file last, as a rotation would); its serial number."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        start, end = now - datetime.timedelta(days=3), now - datetime.timedelta(days=1)
    else:
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=2)
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(
            [*(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
             *(x509.DNSName(name) for name in dns)]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return serial


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


def small_model(models_dir: Path, name: str = "m") -> object:
    """A 5-tree random forest on 3 features, saved as `models_dir/name`."""
    from sklearn.ensemble import RandomForestClassifier

    from serving_runtime import save_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, X[:, 0] > 0)
    save_model(model, models_dir / name, version="1")
    return model


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
