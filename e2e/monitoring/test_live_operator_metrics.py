"""The chart's ServiceMonitor: Prometheus scrapes the operator's own /metrics.

Here the operator is the chart's own pod on the real node (its image imported, in-cluster
API access through the `kubernetes` Service), not a host process: the scrape goes through
the ServiceMonitor -> prometheus-operator -> Prometheus' scrape config -> the chart's
metrics Service, as in a kube-prometheus-stack cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.chart.chart_release import install_chart
from e2e.mlmodels import MLModels, base_mlmodel
from e2e.monitoring.prometheus import Prometheus, wait_seconds
from e2e.realpods.cluster import REAL_NODE_LABEL, REAL_NODE_TOLERATION


def test_the_chart_servicemonitor_gets_the_operator_scraped(
    prometheus: Prometheus, real_node: Any, kubeconfig: Path, k8s: Any, make_namespace,
    tmp_path: Path,
):
    # restricted: the chart's pod must pass the strictest Pod Security level to start at all
    release_ns = make_namespace("chart-servicemonitor",
                                labels={"pod-security.kubernetes.io/enforce": "restricted"})
    models_ns = make_namespace("chart-servicemonitor-models")
    values = {
        "image": {"pullPolicy": "Never"},  # imported into the node; nothing is ever pulled
        "nodeSelector": {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]},
        "tolerations": [REAL_NODE_TOLERATION],
        "operator": {"watchNamespaces": [models_ns]},
        "serviceMonitor": {"enabled": True, "interval": "2s"},
    }
    rel = install_chart(kubeconfig, release_ns, tmp=tmp_path, values=values)
    try:
        (pod,) = [p for p in k8s.core.list_namespaced_pod(release_ns).items
                  if p.metadata.labels.get("app.kubernetes.io/instance") == rel.release]
        assert pod.spec.node_name == real_node, pod.spec.node_name  # a running process
        # A reconcile for the operator to count: an MLModel in the watched namespace.
        models = MLModels(kubeconfig, k8s, models_ns)
        models.apply(base_mlmodel("iris"))
        models.wait_ready("iris", timeout=120)

        job = f'namespace="{release_ns}",pod="{pod.metadata.name}"'
        up = wait_seconds(lambda: prometheus.value(f"up{{{job}}}") == 1, 90,
                          f"the operator pod {pod.metadata.name} scraped")
        print(f"operator pod scraped through the chart's ServiceMonitor (up 1) {up:.1f}s after its "
              "MLModel was Ready")
        wait_seconds(
            lambda: (prometheus.value(
                f'sum(mlmodel_operator_reconciles_total{{{job},result="ok"}})') or 0) > 0,
            30, "a successful reconcile counted")
        # honorLabels: the gauge's namespace is the MLModel's, not the operator pod's.
        wait_seconds(
            lambda: prometheus.value(
                f'mlmodel_operator_model_ready{{namespace="{models_ns}",name="iris"}}') == 1,
            30, "mlmodel_operator_model_ready 1 for the MLModel's namespace")
    finally:
        rel.uninstall()
