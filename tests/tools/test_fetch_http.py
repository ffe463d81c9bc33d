"""fetch over http: a real HTTP server on loopback (the standard library's file server)
serving a real archive and a real artifact. One test uses a tiny fault server that answers
503 a few times, the only way to cause a flaky origin on demand."""

from __future__ import annotations

import hashlib
import http.server
import json
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from serving_runtime.tools.fetch import main
from tests.support.tls_support import self_signed, server_context


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import xgboost as xgb
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("site")
    X, y = load_diabetes(return_X_y=True)
    xgb.XGBRegressor(n_estimators=5, max_depth=2).fit(X, y).save_model(root / "diabetes.ubj")
    folder = root / "folder"
    folder.mkdir()
    (folder / "model.ubj").write_bytes((root / "diabetes.ubj").read_bytes())
    (folder / "metadata.json").write_text(json.dumps(
        {"framework": "xgboost", "version": "7", "artifact": "model.ubj"}))
    with tarfile.open(root / "diabetes-7.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="diabetes")
    return root


def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output readable
        pass


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    yield from serve(partial(Quiet, directory=str(site)))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_over_http(site, base_url, tmp_path):
    dest = tmp_path / "models"
    assert main(["--uri", f"{base_url}/diabetes-7.tar.gz", "--dest", str(dest),
                 "--name", "diabetes", "--framework", "xgboost", "--version", "7",
                 "--sha256", sha(site / "diabetes.ubj")]) == 0
    assert (dest / "diabetes" / "model.ubj").read_bytes() == (site / "diabetes.ubj").read_bytes()
    meta = json.loads((dest / "diabetes" / "metadata.json").read_text())
    assert meta["version"] == "7" and meta["sha256"] == sha(site / "diabetes.ubj")
    assert [p.name for p in dest.iterdir()] == ["diabetes"]


def test_bare_artifact_over_http(site, base_url, tmp_path):
    dest = tmp_path / "models"
    assert main(["--uri", f"{base_url}/diabetes.ubj", "--dest", str(dest), "--name", "d",
                 "--framework", "xgboost", "--version", "1"]) == 0
    meta = json.loads((dest / "d" / "metadata.json").read_text())
    assert meta == {"format_version": 1, "framework": "xgboost", "version": "1",
                    "artifact": "model.ubj", "sha256": sha(site / "diabetes.ubj")}


def test_sha256_mismatch_over_http(base_url, tmp_path, capsys):
    dest = tmp_path / "models"
    assert main(["--uri", f"{base_url}/diabetes.ubj", "--dest", str(dest), "--name", "d",
                 "--framework", "xgboost", "--version", "1", "--sha256", "ab" * 32]) == 4
    assert "sha256 mismatch" in capsys.readouterr().err
    assert list(dest.iterdir()) == []


def test_http_404_names_the_url(base_url, tmp_path, capsys):
    url = f"{base_url}/missing.ubj"
    assert main(["--uri", url, "--dest", str(tmp_path / "m"), "--name", "d",
                 "--framework", "xgboost", "--version", "1"]) == 3
    assert f"{url}: HTTP 404" in capsys.readouterr().err


def test_declared_size_over_cap_is_refused(site, base_url, tmp_path, capsys):
    assert main(["--uri", f"{base_url}/diabetes.ubj", "--dest", str(tmp_path / "m"),
                 "--name", "d", "--framework", "xgboost", "--version", "1",
                 "--max-bytes", "100"]) == 5
    assert "more than the size cap of 100 bytes" in capsys.readouterr().err


def test_connection_refused_is_a_clear_source_error(tmp_path, capsys):
    # Bind then close a socket to get a loopback port that nobody listens on.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--uri", f"http://127.0.0.1:{port}/m.ubj", "--dest", str(tmp_path / "m"),
                 "--name", "d", "--framework", "xgboost", "--version", "1"]) == 3
    assert "download failed after 3 attempts (ConnectError" in capsys.readouterr().err


@pytest.fixture
def https_site(site: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The site over HTTPS with a certificate from a private CA: (URL, CA's PEM)."""
    cert, key = self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(Quiet, directory=str(site)))
    server.socket = server_context(cert, key).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/diabetes-7.tar.gz", cert
    finally:
        server.shutdown()
        server.server_close()


def https_args(url: str) -> list[str]:
    return ["--uri", url, "--name", "diabetes", "--framework", "xgboost", "--version", "7"]


def test_https_unknown_ca_is_refused_and_says_how_to_trust_it(https_site, tmp_path,
                                                               monkeypatch, capsys):
    url, _ = https_site
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("FETCH_CA_BUNDLE", raising=False)
    assert main([*https_args(url), "--dest", str(tmp_path / "a")]) == 3
    err = capsys.readouterr().err
    assert "TLS certificate not trusted" in err and "spec.model.caBundle" in err, err
    assert list((tmp_path / "a").iterdir()) == []  # nothing downloaded without verification


@pytest.mark.parametrize("how", ["flag", "env", "SSL_CERT_FILE"])
def test_https_with_private_ca(how, site, https_site, tmp_path, monkeypatch):
    url, ca = https_site
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("FETCH_CA_BUNDLE", raising=False)
    extra: list[str] = []
    if how == "flag":
        extra = ["--ca-bundle", str(ca)]
    elif how == "env":  # what the operator sets from spec.model.caBundle
        monkeypatch.setenv("FETCH_CA_BUNDLE", str(ca))
    else:  # the standard variable (replaces the public roots) still works
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert main([*https_args(url), "--dest", str(tmp_path / "b"), *extra]) == 0
    assert (tmp_path / "b" / "diabetes" / "model.ubj").read_bytes() == (
        site / "diabetes.ubj").read_bytes()
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["diabetes"]  # no trust file left


def test_ca_bundle_keeps_the_public_roots(tmp_path):
    """A private CA is added to the public roots, not put in their place (a store behind a
    public certificate keeps working beside one behind the company CA)."""
    import certifi

    from serving_runtime.tools.fetch.sources import trust_bundle

    ca, _ = self_signed(tmp_path)
    merged = trust_bundle(ca, tmp_path).read_bytes()
    assert merged.startswith(Path(certifi.where()).read_bytes()) and merged.endswith(
        ca.read_bytes())


@pytest.mark.parametrize("content, needle", [
    (None, "No such file or directory"),
    (b"", "not a PEM certificate bundle"),
    (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
     "not a PEM certificate bundle"),
    (b"\xff\xfe binary", "not a PEM certificate bundle"),
])
def test_bad_ca_bundle_is_a_clear_source_error(content, needle, https_site, tmp_path, capsys):
    url, _ = https_site
    bundle = tmp_path / "ca.crt"
    if content is not None:
        bundle.write_bytes(content)
    assert main([*https_args(url), "--dest", str(tmp_path / "m"),
                 "--ca-bundle", str(bundle)]) == 3
    err = capsys.readouterr().err
    assert f"CA bundle {bundle}" in err and needle in err, err


def test_retries_a_flaky_origin(site, tmp_path):
    """Fault server (a fake, to cause 503s on demand): two 503s, then the file."""
    hits: list[int] = []
    payload = (site / "diabetes.ubj").read_bytes()

    class Flaky(Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            hits.append(1)
            if len(hits) <= 2:
                self.send_error(503, "warming up")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    for url in serve(Flaky):
        dest = tmp_path / "models"
        assert main(["--uri", f"{url}/diabetes.ubj", "--dest", str(dest), "--name", "d",
                     "--framework", "xgboost", "--version", "1"]) == 0
    assert len(hits) == 3
    assert (dest / "d" / "model.ubj").read_bytes() == payload
