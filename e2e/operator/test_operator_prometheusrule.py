"""With the monitoring.coreos.com PrometheusRule CRD served, the rules go into a
PrometheusRule (and the ConfigMap fallback is removed); without it, into the ConfigMap."""

from __future__ import annotations

import yaml

from e2e.helpers import kubectl, wait_for

CRD = "prometheusrules.monitoring.coreos.com"
# Enough of prometheus-operator's CRD for the API server to serve the kind.
MINIMAL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD, "labels": {"n1v1.io/e2e": "true"}},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "PrometheusRule",
            "plural": "prometheusrules",
            "singular": "prometheusrule",
            "listKind": "PrometheusRuleList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def test_prometheusrule_when_the_crd_is_served(
    run_operator, mlmodels, namespace, kubeconfig, base_mlmodel
):
    had_crd = kubectl("get", "crd", CRD, kubeconfig=kubeconfig, check=False).returncode == 0
    # A short resync: the operator notices the CRD at the first reconcile after its 30 s
    # discovery cache expires.
    run_operator(namespace, resync_seconds="5")
    mlmodels.apply(base_mlmodel("iris"))
    if not had_crd:
        wait_for(
            lambda: mlmodels.get("configmap", "iris-alert-rules"),
            describe="ConfigMap fallback while the CRD is missing",
        )
        kubectl("apply", "-f", "-", input=yaml.safe_dump(MINIMAL_CRD), kubeconfig=kubeconfig)
    try:
        kubectl(
            "wait",
            "--for=condition=Established",
            f"crd/{CRD}",
            "--timeout=60s",
            kubeconfig=kubeconfig,
        )
        # A spec change too, so the rules must carry the new threshold.
        mlmodels.patch_spec("iris", {"alerting": {"latencyP95ThresholdMilliseconds": 150}})
        def latency_expr(rule: dict) -> str:
            return next(r["expr"] for r in rule["spec"]["groups"][0]["rules"]
                        if r["alert"] == "MLModelHighLatencyP95")

        # With the CRD served from the start (the monitoring stack installs it) the rule may
        # exist before the patch is reconciled: wait for the new threshold.
        rule = wait_for(
            lambda: (r := mlmodels.get("prometheusrule", "iris"))
            and latency_expr(r).endswith("> 0.15") and r,
            timeout=90,
            describe="PrometheusRule iris with the patched threshold",
            interval=2,
        )
        mlm = mlmodels.mlm("iris")
        assert [r["uid"] for r in rule["metadata"]["ownerReferences"]] == [mlm["metadata"]["uid"]]
        alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
        assert alerts["MLModelHighLatencyP95"]["expr"].endswith("> 0.15")
        wait_for(
            lambda: mlmodels.get("configmap", "iris-alert-rules") is None,
            timeout=90,
            describe="ConfigMap fallback removed once the PrometheusRule exists",
        )
        wait_for(
            lambda: mlmodels.mlm("iris")["status"].get("alertRules") == "PrometheusRule/iris",
            describe="status.alertRules",
        )
    finally:
        if not had_crd:
            kubectl("delete", "crd", CRD, "--wait=false", kubeconfig=kubeconfig, check=False)
