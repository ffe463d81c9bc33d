"""Helpers of the real-pod tests that talk to the cluster: placement on the real node, the
Service as a client sees it, and the remote-versus-local comparison (tests, the conftest and
scripts/cluster_demo.sh share them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from e2e.helpers import wait_for
from e2e.realpods.models import rows
from serving_runtime.client import InferenceClient, RetryPolicy

REAL_NODE_LABEL = ("n1v1.io/node", "real")
REAL_NODE_TOLERATION = {"key": "n1v1.io/real-node", "operator": "Exists", "effect": "NoSchedule"}
RUNTIME_IMAGE = os.environ.get("RUNTIME_IMAGE", "n1v1-ml-serving:0.1.0")
ROWS = 1000
CHUNK = 100  # rows per request: 10 requests of 100 rows each


def place_on_real_node(body: dict[str, Any], *, cpu: str = "200m") -> dict[str, Any]:
    """The manifest with its pods on the real node, using the imported image and a small
    CPU/memory request: the examples ask for more than a 2-core test machine has."""
    serving = body["spec"].setdefault("serving", {})
    serving["nodeSelector"] = {**serving.get("nodeSelector", {}),
                               REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]}
    serving["tolerations"] = [*serving.get("tolerations", []), REAL_NODE_TOLERATION]
    serving["image"] = RUNTIME_IMAGE
    serving["imagePullPolicy"] = "Never"  # imported into the node; nothing is ever pulled
    serving["resources"] = {
        "requests": {"cpu": cpu, "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    return body


def cluster_url(realpods, name: str) -> str:
    svc = realpods.get("service", name)
    assert svc is not None, f"Service {name} missing"
    return f"http://{svc['spec']['clusterIP']}:8000"


def cluster_grpc_url(realpods, name: str) -> str:
    """The Service's gRPC port, as the engine's client takes it."""
    svc = realpods.get("service", name)
    assert svc is not None, f"Service {name} missing"
    (port,) = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"]
    return f"grpc://{svc['spec']['clusterIP']}:{port}"


def wait_service_answers(url: str, times: int = 5, timeout: float = 30) -> None:
    """The Service's ClusterIP answers readiness `times` times in a row. An EndpointSlice can
    say ready a moment before kube-proxy has programmed it (until then the ClusterIP rejects
    connections): what a client sees is what counts."""
    import httpx

    def answers() -> bool:
        try:
            return all(httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
                       for _ in range(times))
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout=timeout, describe=f"{url} answering through the Service")


def ready_endpoints(realpods, name: str) -> list[str]:
    slices = realpods.list("endpointslices.discovery.k8s.io", f"kubernetes.io/service-name={name}")
    return [
        addr
        for s in slices
        for ep in s.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready")
        for addr in ep.get("addresses") or []
    ]


def assert_remote_equals_local(url: str, models_dir: Path, model: str, names: list[str]) -> None:
    """ROWS rows through the Service (REST, or gRPC for a grpc:// URL) and in-process:
    identical answers, row for row."""
    if not url.startswith("grpc://"):
        wait_service_answers(url)
    data = rows(names, ROWS)
    no_retry = RetryPolicy(retries=0)  # a failure must show, not be retried away
    with InferenceClient(remote=True, url=url, retry=no_retry, timeout=10) as remote, \
            InferenceClient(remote=False, models_dir=models_dir) as local:
        for start in range(0, ROWS, CHUNK):
            chunk = {k: v[start:start + CHUNK] for k, v in data.items()}
            r, lo = remote.predict(model, chunk), local.predict(model, chunk)
            assert r["prediction"] == lo["prediction"], f"rows {start}..: predictions differ"
            assert r["probabilities"] == lo["probabilities"], f"rows {start}..: probabilities"
            assert r["model_version"] == lo["model_version"]


def wait_old_pods_gone(realpods, name: str, timeout: float = 60) -> None:
    """No pod of the MLModel is terminating any more. Ready counts the new pods; the old ones
    answer their kept-alive connections until their drain says `Connection: close`."""
    wait_for(lambda: not any(p["metadata"].get("deletionTimestamp") for p in realpods.list(
        "pods", f"app.kubernetes.io/instance={name}")), timeout=timeout,
        describe=f"old pods of {name} gone")
