"""Where a model comes from: a local path, an http(s) URL or an S3 object.

`open_source` returns a local path: for local URIs the path itself (nothing is copied
here), for remote ones a file downloaded into `workdir` under the URI's own file name
(its extension tells an archive from a bare artifact). Downloads are capped in size and
retried a few times on connection errors and 5xx.

TLS trusts the public roots plus, when given, a private CA bundle (PEM): most internal
model stores are signed by a company CA, and replacing the public roots with it (what
SSL_CERT_FILE does) would break a store behind a public certificate in the same cluster.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import certifi

from .errors import SourceError, UnsafeArchiveError

HTTP_ATTEMPTS = 3
CHUNK = 1 << 20


def _file_name(path: str, uri: str) -> str:
    name = PurePosixPath(unquote(path)).name
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise SourceError(f"{uri}: the URI does not end in a file name")
    return name


def _write_capped(chunks: Iterator[bytes], target: Path, max_bytes: int, uri: str) -> None:
    written = 0
    with target.open("wb") as fh:
        for chunk in chunks:
            written += len(chunk)
            if written > max_bytes:
                raise UnsafeArchiveError(
                    f"{uri}: download exceeds the size cap of {max_bytes} bytes "
                    "(raise --max-bytes if the model really is this large)"
                )
            fh.write(chunk)


def _check_declared_size(size: int | None, max_bytes: int, uri: str) -> None:
    if size is not None and size > max_bytes:
        raise UnsafeArchiveError(
            f"{uri}: object is {size} bytes, more than the size cap of {max_bytes} bytes "
            "(raise --max-bytes if the model really is this large)"
        )


def trust_bundle(ca_bundle: Path, workdir: Path) -> Path:
    """A PEM file in `workdir` holding the public roots and the CAs in `ca_bundle`."""
    try:
        extra = ca_bundle.read_bytes()
    except OSError as exc:
        raise SourceError(
            f"CA bundle {ca_bundle}: {exc.strerror or exc} (for an MLModel: does the ConfigMap "
            "named in spec.model.caBundle exist and hold that key?)"
        ) from exc
    try:  # refuse a bundle that is not PEM now, not as a confusing TLS error later
        ssl.create_default_context().load_verify_locations(cafile=str(ca_bundle))
    except (ssl.SSLError, ValueError) as exc:
        raise SourceError(f"CA bundle {ca_bundle}: not a PEM certificate bundle ({exc})") from exc
    fd, name = tempfile.mkstemp(prefix=".trust-", suffix=".pem", dir=workdir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(Path(certifi.where()).read_bytes() + b"\n" + extra)
    return Path(name)


def _fetch_http(
    uri: str, workdir: Path, max_bytes: int, timeout: float, trust: Path | None
) -> Path:
    # imported here: httpx (with its CLI's click and rich) is most of fetch's start-up
    # time, and pvc:// and configmap:// sources never need it
    import httpx

    target = workdir / _file_name(urlsplit(uri).path, uri)
    last: str = ""
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(trust)) if trust else True
    )
    with httpx.Client(timeout=timeout, follow_redirects=True, verify=verify) as client:
        for attempt in range(HTTP_ATTEMPTS):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            try:
                with client.stream("GET", uri) as resp:
                    if resp.status_code >= 500:
                        last = f"HTTP {resp.status_code}"
                        continue
                    if resp.status_code != 200:
                        raise SourceError(f"{uri}: HTTP {resp.status_code} {resp.reason_phrase}")
                    declared = resp.headers.get("content-length")
                    _check_declared_size(int(declared) if declared else None, max_bytes, uri)
                    _write_capped(resp.iter_bytes(CHUNK), target, max_bytes, uri)
                    return target
            except (httpx.TransportError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                if "CERTIFICATE_VERIFY_FAILED" in last:  # not transient: do not retry
                    raise SourceError(
                        f"{uri}: TLS certificate not trusted ({exc}); for a private CA give "
                        "its PEM bundle (spec.model.caBundle on an MLModel, --ca-bundle here)"
                    ) from exc
    raise SourceError(f"{uri}: download failed after {HTTP_ATTEMPTS} attempts ({last})")


def _fetch_s3(uri: str, workdir: Path, max_bytes: int, trust: Path | None) -> Path:
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise SourceError(f"{uri}: expected s3://BUCKET/KEY")
    target = workdir / _file_name(key, uri)
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError as exc:  # the runtime extra installs boto3; say so if it is missing
        raise SourceError("s3:// URIs need boto3 (pip install 'n1v1-serving[runtime]')") from exc
    # boto3 reads AWS_ENDPOINT_URL itself in recent versions; passing it keeps older ones
    # right. botocore's region variable is AWS_DEFAULT_REGION; AWS_REGION (what most other
    # SDKs and EKS pod identity set) is honoured too.
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None,
        verify=str(trust) if trust else None,
    )
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
        _check_declared_size(obj.get("ContentLength"), max_bytes, uri)
        _write_capped(obj["Body"].iter_chunks(CHUNK), target, max_bytes, uri)
    except NoCredentialsError as exc:
        raise SourceError(
            f"{uri}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        ) from exc
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise SourceError(f"{uri}: S3 {err.get('Code', '?')}: {err.get('Message', exc)}") from exc
    except BotoCoreError as exc:
        raise SourceError(f"{uri}: S3 request failed ({exc})") from exc
    return target


def open_source(
    uri: str,
    workdir: Path,
    *,
    max_bytes: int,
    timeout: float = 60.0,
    ca_bundle: Path | None = None,
) -> Path:
    """Resolve `uri` to a local file or folder (downloading into `workdir` if remote).

    `ca_bundle`: extra CAs (PEM) trusted for https:// and s3:// besides the public roots.
    """
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https", "s3"):
        trust = trust_bundle(ca_bundle, workdir) if ca_bundle else None
        if scheme == "s3":
            return _fetch_s3(uri, workdir, max_bytes, trust)
        return _fetch_http(uri, workdir, max_bytes, timeout, trust)
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"{uri}: file:// URIs must be local (file:///path)")
        path = Path(unquote(parts.path))
    elif scheme == "" or len(scheme) == 1:  # plain path (a one-letter scheme is a drive)
        path = Path(uri)
    else:
        raise SourceError(f"{uri}: unsupported scheme {scheme!r} (use file://, http(s)://, s3://)")
    if not path.exists():
        raise SourceError(f"{uri}: no such file or folder")
    return path
