"""Fixtures of the live-monitoring tests: the cluster's Prometheus (scraping through the
operator's PodMonitors, loading its PrometheusRules through prometheus-operator) and KEDA,
both started by e2e/cluster/up (monitoring.sh). Without them the tests fail: they never skip.

- ``prometheus`` (session): :class:`e2e.monitoring.prometheus.Prometheus`.
- ``keda_chart`` (session): the chart installed with ``keda.enabled`` pointing at that
  Prometheus: (release, kubeconfig of its ServiceAccount).
- ``monitored`` (function): MLModels in a fresh namespace, reconciled by the operator with
  exactly the chart's settings and RBAC (plus a short resync).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.chart.chart_release import ChartRelease, chart_release_for_operator, run_operator
from e2e.mlmodels import MLModels
from e2e.monitoring.prometheus import NAMESPACE, SERVICE, Prometheus

# the real node and the test host's model site, as the real-pod tests have them
from e2e.realpods.conftest import model_site, pod_host_ip, real_node  # noqa: F401

# Test tempo (the defaults stay realistic: docs/autoscaling.md): Prometheus scrapes and
# evaluates every 2 s (monitoring.sh), the p95 is over 20 s and KEDA asks every 5 s.
LATENCY_WINDOW = "20s"
KEDA_POLLING_SECONDS = 5


@pytest.fixture(scope="session")
def prometheus(k8s: Any) -> Prometheus:
    from kubernetes.client.exceptions import ApiException

    try:
        svc = k8s.core.read_namespaced_service(SERVICE, NAMESPACE)
    except ApiException as exc:
        pytest.fail(f"no Service {NAMESPACE}/{SERVICE} ({exc.reason}): the live-monitoring "
                    "tests need the monitoring stack that e2e/cluster/up starts with the real "
                    "node (see its log)", pytrace=False)
    return Prometheus(f"http://{svc.spec.cluster_ip}:9090")


@pytest.fixture(scope="session")
def keda_chart(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory,
               prometheus: Prometheus) -> Iterator[tuple[ChartRelease, Path]]:
    values = {"keda": {"enabled": True, "prometheusUrl": prometheus.url,
                       "latencyWindow": LATENCY_WINDOW,
                       "pollingInterval": KEDA_POLLING_SECONDS}}
    with chart_release_for_operator(kubeconfig, tmp_path_factory.mktemp("keda-chart"),
                                    values) as release:
        yield release


@pytest.fixture
def monitored(keda_chart: tuple[ChartRelease, Path], kubeconfig: Path, k8s: Any,
              namespace: str, tmp_path: Path) -> Iterator[MLModels]:
    rel, sa_config = keda_chart
    env = {**rel.operator_env(), "OPERATOR_NAMESPACES": namespace,
           "OPERATOR_RESYNC_SECONDS": "5"}
    with run_operator(sa_config, env, tmp_path / "operator.log") as op:
        yield MLModels(kubeconfig, k8s, namespace)
        print(f"----- operator log -----\n{op.logs()[-20000:]}")
