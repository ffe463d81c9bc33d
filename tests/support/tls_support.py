"""Test certificates: a private CA issuing server certificates (`make_ca`, `issue`), and
a certificate for one IP address that is its own CA (`self_signed`), all built by one
function (`_certificate`).

`self_signed` is shared by the fetch tests (a store on loopback) and the real-pod tests (a
store on the pods' gateway address, trusted through an MLModel's spec.model.caBundle);
`make_ca`/`issue` by the runtime's TLS tests (tests/support/auth_support.py re-exports
them) and the real-pod access test.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

KeyType = Literal["ec", "rsa"]


@dataclass
class CA:
    cert_pem: bytes
    key: Any  # its private key (EC)
    path: Path  # the CA certificate's PEM file (what clients trust)


def _new_key(key_type: KeyType) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(cn: str, key: Any, *, issuer: CA | None = None, ca: bool = False,
                 path_length: int | None = None, key_usage: bool = False,
                 server_auth: bool = False, ips: Sequence[str] = (),
                 dns: Sequence[str] = (), valid: tuple[datetime.timedelta,
                                                       datetime.timedelta]) -> bytes:
    """The PEM certificate of `key` for `cn` (and `ips`/`dns` names when given), signed
    by `issuer`'s key, or by `key` itself when no issuer (self-signed); valid from now +
    valid[0] to now + valid[1]."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name = (x509.load_pem_x509_certificate(issuer.cert_pem).subject
                   if issuer is not None else subject)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now + valid[0]).not_valid_after(now + valid[1])
    )
    if ips or dns:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [*(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
             *(x509.DNSName(name) for name in dns)]), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    if server_auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    signer = issuer.key if issuer is not None else key
    cert = builder.sign(signer, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(tmp: Path, name: str = "n1v1 test CA") -> CA:
    """A CA (EC key, valid a day either side of now), its certificate at tmp/ca.pem."""
    key = _new_key("ec")
    pem = _certificate(name, key, ca=True, path_length=0, key_usage=True,
                       valid=(-datetime.timedelta(days=1), datetime.timedelta(days=1)))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "ca.pem"
    path.write_bytes(pem)
    return CA(pem, key, path)


def issue(ca: CA, cert_path: Path, key_path: Path, *, cn: str = "runtime-a",
          expired: bool = False, ips: Sequence[str] = ("127.0.0.1",),
          dns: Sequence[str] = ("localhost",), key_type: KeyType = "ec") -> int:
    """A server certificate for `ips` and `dns` names signed by `ca`, with a new
    `key_type` key, written to the two paths (the certificate file last, as a rotation
    would); its serial number."""
    from cryptography import x509

    key = _new_key(key_type)
    valid = ((-datetime.timedelta(days=3), -datetime.timedelta(days=1)) if expired else
             (-datetime.timedelta(minutes=5), datetime.timedelta(hours=2)))
    pem = _certificate(cn, key, issuer=ca, server_auth=True, ips=ips, dns=dns, valid=valid)
    key_path.write_bytes(_key_pem(key))
    cert_path.write_bytes(pem)
    return int(x509.load_pem_x509_certificate(pem).serial_number)


def self_signed(tmp: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate PEM, key PEM) for `ip`; the certificate is its own CA."""
    key = _new_key("ec")
    pem = _certificate(ip, key, ca=True, ips=[ip],
                       valid=(-datetime.timedelta(minutes=5), datetime.timedelta(hours=2)))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(_key_pem(key))
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


__all__ = ["CA", "KeyType", "issue", "make_ca", "self_signed", "server_context"]
