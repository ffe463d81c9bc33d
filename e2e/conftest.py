"""pytest fixtures for the e2e suite; they work against any reachable kubeconfig.

Fixtures (see e2e/cluster/README.md for examples):
- ``kubeconfig`` (session): Path of the admin kubeconfig under test.
- ``k8s`` (session): :class:`e2e.helpers.ApiClients` for that kubeconfig.
- ``make_namespace`` (function): factory ``make_namespace(prefix="e2e", labels=None) -> str``
  creating throwaway namespaces, all deleted after the test.
- ``namespace`` (function): one throwaway namespace name.
- ``operator_kubeconfig`` (session): the chart is installed (with the CRD); returns the
  chart ServiceAccount's kubeconfig, which the operator process runs with.
- ``run_operator`` (function): factory ``run_operator(namespace, **settings) -> OperatorProcess``
  starting ``python -m mlmodel_operator`` watching that namespace; logs are printed at
  teardown (pytest shows them when the test fails); every process is stopped afterwards.
- ``mlmodels`` (function): :class:`e2e.mlmodels.MLModels` in ``namespace``, acting as the
  admin; ``base_mlmodel`` (function): ``base_mlmodel(name, model={...}, ...) -> dict``.
- ``sa_kubeconfig`` (function): factory ``sa_kubeconfig(namespace, name) -> Path``, a
  kubeconfig acting as that ServiceAccount (created if missing).
"""

from __future__ import annotations

import os
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
from e2e.mlmodels import MLModels, base_mlmodel
from e2e.operator_process import OperatorProcess
from e2e.pod_clients import Pods
from e2e.realpods.cluster import REAL_NODE_LABEL

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


@pytest.fixture(scope="session")
def operator_kubeconfig(
    kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The kubeconfig the operator runs with: the Helm chart's ServiceAccount.

    Installs charts/mlmodel-operator (its CRDs, and the ClusterRole derived from
    operator/RBAC.md) and returns a kubeconfig holding a `kubectl create token` token of the
    chart's ServiceAccount, so every operator e2e test also proves the RBAC list is complete
    (see e2e/chart/chart_release.py; the release is uninstalled after the session).
    """
    from e2e.chart.chart_release import chart_operator_identity

    with chart_operator_identity(kubeconfig, tmp_path_factory.mktemp("chart")) as sa_config:
        yield sa_config


@pytest.fixture
def run_operator(
    operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def run(namespace: str, **settings: str) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(operator_kubeconfig),
            "OPERATOR_NAMESPACES": namespace,
            "OPERATOR_LOG_LEVEL": "info",
            **{f"OPERATOR_{k.upper()}": v for k, v in settings.items()},
        }
        op = OperatorProcess(env, tmp_path / f"operator-{namespace}-{len(started)}.log").start()
        started.append(op)
        return op

    yield run
    for op in started:
        op.stop()
        # Printed at teardown: pytest shows it under "Captured stdout teardown" on failure.
        print(f"----- operator log ({op.log_path.name}) -----\n{op.logs()[-20000:]}")


@pytest.fixture(name="base_mlmodel")
def base_mlmodel_fixture() -> Callable[..., dict]:
    """``base_mlmodel(name, model={...}, serving={...}, alerting={...}) -> dict``."""
    return base_mlmodel


@pytest.fixture
def mlmodels(operator_kubeconfig: Path, kubeconfig: Path, k8s: ApiClients,
             namespace: str) -> MLModels:
    """Acts as the admin (a user), never with the operator's credentials."""
    del operator_kubeconfig  # only needed for its side effect: the CRD is installed
    return MLModels(kubeconfig, k8s, namespace)


@pytest.fixture
def pods(kubeconfig: Path, k8s: ApiClients) -> Pods:
    """Client pods on the real node (e2e/pod_clients.py); fails without that node."""
    key, value = REAL_NODE_LABEL
    if not k8s.core.list_node(label_selector=f"{key}={value}").items:
        pytest.fail(f"no node labelled {key}={value}: this test needs the real node "
                    "(e2e/cluster/up starts it, with kube-router, as root)", pytrace=False)
    return Pods(kubeconfig, k8s)
