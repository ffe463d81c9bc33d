"""The API server enforces what production clusters enforce: Pod Security admission and RBAC
for ServiceAccount tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from e2e.helpers import ApiClients, apply_manifest, kubectl, wait_for

IMAGE = "registry.k8s.io/pause:3.10"


def pod(name: str, privileged: bool) -> dict[str, Any]:
    if privileged:
        security: dict[str, Any] = {"privileged": True}
        pod_security: dict[str, Any] = {}
    else:  # compliant with the `restricted` profile
        security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        pod_security = {
            "runAsNonRoot": True,
            "runAsUser": 65535,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": pod_security,
            "containers": [{"name": "main", "image": IMAGE, "securityContext": security}],
        },
    }


def test_restricted_namespace_rejects_privileged_pod(
    k8s: ApiClients, make_namespace: Callable[..., str]
) -> None:
    ns = make_namespace(
        "e2e-restricted", labels={"pod-security.kubernetes.io/enforce": "restricted"}
    )

    with pytest.raises(ApiException) as rejected:
        k8s.core.create_namespaced_pod(ns, pod("privileged", privileged=True))
    assert rejected.value.status == 403, rejected.value
    message = json.loads(rejected.value.body)["message"]
    assert 'violates PodSecurity "restricted' in message, message
    assert "securityContext.privileged=true" in message, message

    # Control: the namespace accepts a compliant pod, so the rejection above is the policy's.
    created = k8s.core.create_namespaced_pod(ns, pod("compliant", privileged=False))
    assert created.metadata.name == "compliant"


def test_privileged_pod_allowed_without_the_label(k8s: ApiClients, namespace: str) -> None:
    """Counter-check: the same privileged pod is admitted where no policy is enforced."""
    created = k8s.core.create_namespaced_pod(namespace, pod("privileged", privileged=True))
    assert created.spec.containers[0].security_context.privileged is True


def test_serviceaccount_needs_rbac_to_list_deployments(
    kubeconfig: Path,
    namespace: str,
    sa_kubeconfig: Callable[[str, str], Path],
) -> None:
    as_sa = sa_kubeconfig(namespace, "reader")

    denied = kubectl("get", "deployments", "-n", namespace, kubeconfig=as_sa, check=False)
    assert denied.returncode != 0, denied.stdout
    assert "forbidden" in denied.stderr.lower(), denied.stderr
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr, denied.stderr

    apply_manifest(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "deployment-reader"},
                "rules": [
                    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "reader-reads-deployments"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "deployment-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        ],
        kubeconfig=kubeconfig,
        namespace=namespace,
    )

    allowed = wait_for(
        lambda: kubectl(
            "get", "deployments", "-n", namespace, "-o", "name", kubeconfig=as_sa, check=False
        ).returncode == 0,
        timeout=30,
        describe="the RoleBinding to let reader list deployments",
        observe=lambda: kubectl(
            "get", "deployments", "-n", namespace, kubeconfig=as_sa, check=False
        ).stderr,
    )
    assert allowed
    # The grant is exactly what the Role says: pods stay forbidden.
    pods = kubectl("get", "pods", "-n", namespace, kubeconfig=as_sa, check=False)
    assert pods.returncode != 0 and "forbidden" in pods.stderr.lower(), pods.stderr
