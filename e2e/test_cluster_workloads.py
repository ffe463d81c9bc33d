"""The cluster runs workloads: Deployments get Running+Ready pods, and deleting a Deployment
garbage-collects its ReplicaSets and pods (controller-manager, scheduler and kwok at work)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from e2e.helpers import ApiClients, kubectl, wait_for

# Nothing is pulled on kwok nodes; on kind this small image is pulled once.
IMAGE = "registry.k8s.io/pause:3.10"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def deployment(name: str, image: str = IMAGE, replicas: int = 2) -> dict[str, Any]:
    """A Deployment whose pods satisfy the `restricted` Pod Security profile."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65535,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def pod_summary(k8s: ApiClients, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Phase, Ready condition and node of each pod: what the failure messages show."""
    pods = k8s.core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        {
            "name": p.metadata.name,
            "phase": p.status.phase,
            "ready": next(
                (c.status for c in p.status.conditions or [] if c.type == "Ready"), None
            ),
            "node": p.spec.node_name,
        }
        for p in pods
    ]


def kwok_nodes(k8s: ApiClients) -> set[str]:
    return {
        n.metadata.name
        for n in k8s.core.list_node().items
        if (n.metadata.annotations or {}).get(KWOK_ANNOTATION) == "fake"
    }


def wait_ready_pods(k8s: ApiClients, namespace: str, name: str, replicas: int) -> list[dict]:
    def ready() -> list[dict[str, Any]] | None:
        pods = pod_summary(k8s, namespace, f"app={name}")
        good = [p for p in pods if p["phase"] == "Running" and p["ready"] == "True"]
        return pods if len(good) == replicas and len(pods) == replicas else None

    return wait_for(
        ready,
        timeout=90,
        describe=f"{replicas} Running+Ready pods of deployment {namespace}/{name}",
        observe=lambda: pod_summary(k8s, namespace, f"app={name}"),
    )


def test_deployment_gets_running_ready_pods(k8s: ApiClients, namespace: str) -> None:
    k8s.apps.create_namespaced_deployment(namespace, deployment("web", replicas=2))

    pods = wait_ready_pods(k8s, namespace, "web", 2)

    nodes = {n.metadata.name for n in k8s.core.list_node().items}
    fake = kwok_nodes(k8s)
    for pod in pods:
        # On the local control plane every pod lands on a kwok node; on kind, a real node.
        assert pod["node"] in (fake or nodes), pod
    status = wait_for(
        lambda: (d := k8s.apps.read_namespaced_deployment(
            "web", namespace).status).available_replicas == 2 and d,
        timeout=30,
        describe="deployment web availableReplicas == 2",
    )
    assert status.ready_replicas == 2


def test_never_ready_image_runs_but_never_becomes_ready(
    k8s: ApiClients, namespace: str
) -> None:
    """The kwok stage contract the operator's stuck-rollout test relies on."""
    if not kwok_nodes(k8s):
        pytest.skip("kwok-only behaviour: this cluster has no kwok nodes (e.g. kind)")
    k8s.apps.create_namespaced_deployment(
        namespace, deployment("stuck", image="n1v1-ml-serving:never-ready", replicas=1)
    )

    pods = wait_for(
        lambda: [p for p in pod_summary(k8s, namespace, "app=stuck") if p["phase"] == "Running"],
        timeout=60,
        describe="a Running pod of deployment stuck",
        observe=lambda: pod_summary(k8s, namespace, "app=stuck"),
    )
    assert pods[0]["ready"] == "False", pods
    # Still not Ready a few seconds later, and the Deployment reports no ready replica.
    for _ in range(6):
        time.sleep(0.5)
        assert pod_summary(k8s, namespace, "app=stuck")[0]["ready"] == "False"
    dep = k8s.apps.read_namespaced_deployment("stuck", namespace)
    assert not dep.status.ready_replicas, dep.status


def test_deleting_deployment_garbage_collects_replicasets_and_pods(
    k8s: ApiClients, namespace: str, kubeconfig
) -> None:
    k8s.apps.create_namespaced_deployment(namespace, deployment("gc", replicas=2))
    wait_ready_pods(k8s, namespace, "gc", 2)
    replicasets = k8s.apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items
    assert len(replicasets) == 1
    owner = replicasets[0].metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("Deployment", "gc")

    # Background propagation: the API deletes only the Deployment; the garbage collector
    # must find and delete its dependents (ReplicaSet, then pods).
    k8s.apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")

    def dependents_gone() -> bool:
        rs = k8s.apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items
        pods = k8s.core.list_namespaced_pod(namespace, label_selector="app=gc").items
        return not rs and not pods

    wait_for(
        dependents_gone,
        timeout=60,
        describe="garbage collection of deployment gc's ReplicaSet and pods",
        observe=lambda: kubectl(
            "get", "rs,pods", "-n", namespace, "-l", "app=gc", "-o", "wide",
            kubeconfig=kubeconfig,
        ).stdout,
    )
    with pytest.raises(ApiException) as exc:
        k8s.apps.read_namespaced_replica_set(replicasets[0].metadata.name, namespace)
    assert exc.value.status == 404
