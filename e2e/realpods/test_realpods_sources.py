"""The remaining examples on real pods, each with its real kind of source: S3 (moto's server,
a real S3 API, on the pods' gateway address) and a PersistentVolumeClaim (a hostPath volume
on the real node). The PVC example also asks for a node label no node has: the status must
say the pods are unschedulable, with the scheduler's message, until a node gets it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from e2e.helpers import free_port, kubectl, wait_for
from e2e.realpods.cluster import (
    assert_remote_equals_local,
    cluster_url,
    ready_endpoints,
)
from e2e.realpods.models import example, xgboost_folder

MOTO = Path(sys.executable).with_name("moto_server")


@pytest.fixture
def s3_server(pod_host_ip: str) -> Iterator[str]:
    """moto's S3 server on the pods' gateway address; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([str(MOTO), "-H", pod_host_ip, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.create_connection((pod_host_ip, port), timeout=1).close()
                 or True, timeout=60, describe="moto_server listening")
        yield f"http://{pod_host_ip}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_s3_example_served_from_moto(realpods, on_real_node, s3_server, tmp_path):
    """examples/s3-minio.yaml: the bare .ubj artifact in S3, credentials from the Secret
    (fetch step only); answers equal local mode on 1000 rows."""
    import boto3

    secret, mlmodel = example("s3-minio.yaml")
    creds = secret["stringData"]
    creds["AWS_ENDPOINT_URL"] = s3_server
    # the example opens MinIO's 9000 to the fetch step; moto listens elsewhere
    mlmodel["spec"]["serving"]["networkPolicy"]["fetchPorts"] = [urlsplit(s3_server).port]
    version = mlmodel["spec"]["model"]["version"]
    folder, trained_names = xgboost_folder(tmp_path / "train", "churn-xgb", version)
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                      region_name=creds["AWS_DEFAULT_REGION"])
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(folder / "model.ubj"), "models", f"churn-xgb/{version}/model.ubj")
    realpods.apply(secret)
    t0 = time.monotonic()
    realpods.apply(on_real_node(mlmodel))
    realpods.wait_ready("churn-xgb", timeout=120)
    print(f"churn-xgb (S3) Ready {time.monotonic() - t0:.1f}s after apply")
    # The local side fetches the very same object the way the init container did.
    models_dir = tmp_path / "models"
    subprocess.run(
        [sys.executable, "-m", "serving_runtime.tools.fetch", "--uri",
         mlmodel["spec"]["model"]["uri"], "--dest", str(models_dir), "--name", "churn-xgb",
         "--framework", "xgboost", "--version", version],
        env={**os.environ, **creds}, check=True, capture_output=True, text=True)
    # A bare artifact carries only what XGBoost stored: a numpy-trained model has no feature
    # names, so both sides expect XGBoost's defaults f0, f1, ...
    names = [f"f{i}" for i in range(len(trained_names))]
    assert_remote_equals_local(cluster_url(realpods, "churn-xgb"), models_dir, "churn-xgb", names)


def hostpath_claim(realpods, real_node: str, path: Path, claim: str) -> None:
    pv = f"{realpods.ns}-{claim}"[:63]
    realpods.apply({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv, "labels": {"n1v1.io/e2e": "true"}},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": realpods.ns, "name": claim},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [real_node]}]}]}},
        },
    })
    realpods.apply({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })


@pytest.fixture
def node_label(real_node: str, kubeconfig: Path) -> Iterator[Callable[[str, str], None]]:
    added: list[str] = []

    def add(key: str, value: str) -> None:
        kubectl("label", "node", real_node, f"{key}={value}", "--overwrite",
                kubeconfig=kubeconfig)
        added.append(key)

    yield add
    for key in added:
        kubectl("label", "node", real_node, f"{key}-", kubeconfig=kubeconfig, check=False)


def test_pvc_example_unschedulable_then_served(realpods, on_real_node, real_node, node_label,
                                               tmp_path):
    """examples/xgboost-autoscaling.yaml from a PVC: status says Unschedulable (the
    scheduler's words) while no node has node-role.example.com/inference=true; once the real
    node gets the label, both pods (minReplicas 2) serve answers equal to local mode."""
    (mlmodel,) = example("xgboost-autoscaling.yaml")
    version = mlmodel["spec"]["model"]["version"]
    store = Path("/tmp") / f"n1v1-e2e-store-{realpods.ns}"
    try:
        folder, names = xgboost_folder(tmp_path / "models", "pricing-xgb", version)
        target = store / "pricing-xgb" / version
        shutil.copytree(folder, target)
        for p in [store, *store.rglob("*")]:  # the pod runs as uid 10001: hostPath keeps modes
            p.chmod(0o755 if p.is_dir() else 0o644)
        hostpath_claim(realpods, real_node, store, "model-store")
        t0 = time.monotonic()
        realpods.apply(on_real_node(mlmodel, cpu="100m"))
        cond = realpods.wait_condition("pricing-xgb", "Ready", "False", "Unschedulable",
                                       timeout=30)
        said_s = time.monotonic() - t0
        ready = next(c for c in cond["status"]["conditions"] if c["type"] == "Ready")
        assert "node(s) didn't match" in ready["message"], ready
        print(f"pricing-xgb: Unschedulable in status {said_s:.1f}s after apply: "
              f"{ready['message']}")
        node_label("node-role.example.com/inference", "true")
        realpods.wait_ready("pricing-xgb", timeout=120)
        wait_for(lambda: len(ready_endpoints(realpods, "pricing-xgb")) == 2, timeout=30,
                 describe="2 ready endpoints")
        assert_remote_equals_local(cluster_url(realpods, "pricing-xgb"), tmp_path / "models",
                                   "pricing-xgb", names)
        meta = json.loads((target / "metadata.json").read_text())
        assert meta["version"] == version
    finally:
        shutil.rmtree(store, ignore_errors=True)
        kubectl("delete", "pv", f"{realpods.ns}-model-store"[:63], "--wait=false",
                kubeconfig=realpods.kubeconfig, check=False)
