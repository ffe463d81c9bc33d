"""fetch from s3:// against a real S3-compatible server on loopback (moto in server mode,
a separate process speaking the S3 HTTP API), configured the way a pod would be: AWS_*
environment variables and AWS_ENDPOINT_URL."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MOTO = Path(sys.executable).with_name("moto_server")
BUCKET = "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    if not MOTO.exists():
        pytest.fail(f"{MOTO} missing: install the dev extra (moto[server])")
    port = free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("moto_server did not start within 60 s")
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def bucket(s3_env: dict[str, str]) -> dict[str, bytes]:
    import boto3
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"],
                      aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    X, y = load_iris(return_X_y=True)
    buf = io.BytesIO()
    sio.dump(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y), buf)
    artifact = buf.getvalue()
    s3.put_object(Bucket=BUCKET, Key="iris/v2/iris.skops", Body=artifact)

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("model.skops", artifact), ("metadata.json", json.dumps(
                {"framework": "sklearn", "version": "2", "artifact": "model.skops"}).encode())):
            info = tarfile.TarInfo(f"iris/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=BUCKET, Key="iris/v2/iris.tar.gz", Body=archive.getvalue())
    return {"artifact": artifact}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run([sys.executable, "-m", "serving_runtime.tools.fetch", *args], cwd=ROOT,
                          env=full, capture_output=True, text=True, timeout=120)


def test_bare_artifact_from_s3(s3_env, bucket, tmp_path):
    dest = tmp_path / "models"
    digest = hashlib.sha256(bucket["artifact"]).hexdigest()
    proc = run_cli(s3_env, "--uri", f"s3://{BUCKET}/iris/v2/iris.skops", "--dest", str(dest),
                   "--name", "iris", "--framework", "sklearn", "--version", "2",
                   "--sha256", digest)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "iris" / "model.skops").read_bytes() == bucket["artifact"]
    assert json.loads((dest / "iris" / "metadata.json").read_text())["sha256"] == digest


def test_archive_from_s3(s3_env, bucket, tmp_path):
    dest = tmp_path / "models"
    proc = run_cli(s3_env, "--uri", f"s3://{BUCKET}/iris/v2/iris.tar.gz", "--dest", str(dest),
                   "--name", "iris", "--framework", "sklearn", "--version", "2")
    assert proc.returncode == 0, proc.stderr
    assert (dest / "iris" / "model.skops").read_bytes() == bucket["artifact"]


def test_sha256_mismatch_from_s3(s3_env, bucket, tmp_path):
    dest = tmp_path / "models"
    proc = run_cli(s3_env, "--uri", f"s3://{BUCKET}/iris/v2/iris.tar.gz", "--dest", str(dest),
                   "--name", "iris", "--framework", "sklearn", "--version", "2",
                   "--sha256", "0" * 64)
    assert proc.returncode == 4
    assert "sha256 mismatch for model.skops" in proc.stderr
    assert list(dest.iterdir()) == []


def test_missing_key_and_bad_credentials(s3_env, bucket, tmp_path):
    proc = run_cli(s3_env, "--uri", f"s3://{BUCKET}/iris/v9/iris.skops",
                   "--dest", str(tmp_path / "m"), "--name", "iris", "--framework", "sklearn",
                   "--version", "9")
    assert proc.returncode == 3
    assert f"s3://{BUCKET}/iris/v9/iris.skops: S3 NoSuchKey" in proc.stderr

    proc = run_cli({"AWS_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL"],
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                    "AWS_CONFIG_FILE": str(tmp_path / "none"),
                    "AWS_EC2_METADATA_DISABLED": "true"},
                   "--uri", f"s3://{BUCKET}/iris/v2/iris.skops", "--dest", str(tmp_path / "m"),
                   "--name", "iris", "--framework", "sklearn", "--version", "2")
    assert proc.returncode == 3
    assert "no AWS credentials" in proc.stderr


def test_malformed_s3_uri(s3_env, tmp_path):
    proc = run_cli(s3_env, "--uri", "s3://only-bucket", "--dest", str(tmp_path / "m"),
                   "--name", "iris", "--framework", "sklearn", "--version", "2")
    assert proc.returncode == 3
    assert "expected s3://BUCKET/KEY" in proc.stderr
