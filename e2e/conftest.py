"""pytest fixtures for the e2e suite; they work against any reachable kubeconfig.

Fixtures (see e2e/cluster/README.md for examples):
- ``kubeconfig`` (session): Path of the admin kubeconfig under test.
- ``k8s`` (session): :class:`e2e.helpers.ApiClients` for that kubeconfig.
- ``make_namespace`` (function): factory ``make_namespace(prefix="e2e", labels=None) -> str``
  creating throwaway namespaces, all deleted after the test.
- ``namespace`` (function): one throwaway namespace name.
- ``sa_kubeconfig`` (function): factory ``sa_kubeconfig(namespace, name) -> Path``, a
  kubeconfig acting as that ServiceAccount (created if missing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from e2e.helpers import (
    ApiClients,
    ClusterUnavailable,
    api_clients,
    kubectl,
    resolve_kubeconfig,
    serviceaccount_kubeconfig,
    unique_name,
)

# Every namespace the suite creates carries this label, so leftovers are easy to find:
#   kubectl delete ns -l n1v1.io/e2e=true
E2E_LABEL = "n1v1.io/e2e"


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    """Admin kubeconfig of the cluster under test; fails (never skips) when unreachable."""
    try:
        return resolve_kubeconfig()
    except ClusterUnavailable as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)  # outside `except`: no chained traceback noise


@pytest.fixture(scope="session")
def k8s(kubeconfig: Path) -> ApiClients:
    """Typed kubernetes client APIs acting as the admin."""
    return api_clients(kubeconfig)


@pytest.fixture
def make_namespace(
    k8s: ApiClients, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Factory for throwaway namespaces; every one is deleted when the test ends."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    created: list[str] = []

    def make(prefix: str | None = None, labels: Mapping[str, str] | None = None) -> str:
        name = unique_name(prefix or f"e2e-{request.node.name}"[:40])
        body = client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={E2E_LABEL: "true", **(labels or {})})
        )
        k8s.core.create_namespace(body)
        created.append(name)
        return name

    yield make
    for name in created:
        try:  # not waited for: the namespace controller finishes it in the background
            k8s.core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    """One throwaway namespace (name derived from the test's name), deleted afterwards."""
    return make_namespace()


@pytest.fixture
def sa_kubeconfig(
    kubeconfig: Path, tmp_path: Path
) -> Callable[[str, str], Path]:
    """Factory: ``sa_kubeconfig(namespace, name)`` -> kubeconfig acting as that SA.

    Creates the ServiceAccount when it does not exist yet (no RBAC is granted).
    """

    def make(namespace: str, name: str) -> Path:
        exists = kubectl(
            "get", "serviceaccount", name, "-n", namespace, kubeconfig=kubeconfig, check=False
        )
        if exists.returncode != 0:
            kubectl("create", "serviceaccount", name, "-n", namespace, kubeconfig=kubeconfig)
        return serviceaccount_kubeconfig(
            kubeconfig, namespace, name, tmp_path / f"{namespace}-{name}.kubeconfig"
        )

    return make
