"""`helm install` of the chart (cluster-wide, the default) on the cluster under test, and the
operator reconciling an MLModel with nothing but the chart's ServiceAccount and RBAC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.chart.chart_release import ChartRelease, install_chart, run_operator
from e2e.chart.mlmodels import apply_mlmodel, get_json, mlmodel, wait_child, wait_ready
from e2e.helpers import kubectl, wait_for


@pytest.fixture(scope="module")
def release(kubeconfig: Path, module_namespace, module_tmp: Path):
    # The operator's namespace enforces the restricted Pod Security profile: the pod is
    # only created if the chart's pod spec complies.
    ns = module_namespace("chart-op", {"pod-security.kubernetes.io/enforce": "restricted"})
    rel = install_chart(kubeconfig, ns, tmp=module_tmp)
    yield rel
    rel.helm("uninstall", rel.release, check=False, timeout=180)
    kubectl("delete", "clusterrole,clusterrolebinding", "-l",
            f"app.kubernetes.io/instance={rel.release}", "--ignore-not-found",
            kubeconfig=kubeconfig, check=False)


@pytest.fixture(scope="module")
def sa_config(release: ChartRelease, module_tmp: Path) -> Path:
    return release.sa_kubeconfig(module_tmp / "chart-sa.kubeconfig")


def test_install_creates_the_operator_objects(release: ChartRelease, kubeconfig: Path):
    status = json.loads(release.helm("status", release.release, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    name = release.fullname
    # NOTES.txt tells the user the next commands, with the real names filled in.
    notes = release.helm("get", "notes", release.release).stdout
    assert f"kubectl -n {release.namespace} rollout status deployment/{name}" in notes
    assert "watches MLModels in every namespace" in notes
    for kind, ns in [("serviceaccount", release.namespace), ("service", release.namespace),
                     ("clusterrole", None), ("clusterrolebinding", None)]:
        args = [kind, name if kind != "service" else f"{name}-metrics"]
        assert get_json(kubeconfig, *args, *(["-n", ns] if ns else [])), kind
    assert get_json(kubeconfig, "crd", "mlmodels.serving.n1v1.io")
    assert get_json(kubeconfig, "role", f"{name}-leader-election", "-n", release.namespace)


def test_operator_pod_is_admitted_under_the_restricted_profile(
    release: ChartRelease, kubeconfig: Path
):
    dep = release.deployment()
    assert dep["status"].get("availableReplicas") == 1, dep["status"]
    pods = json.loads(kubectl(
        "get", "pods", "-n", release.namespace, "-o", "json", "-l",
        f"app.kubernetes.io/instance={release.release}", kubeconfig=kubeconfig).stdout)["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]


def can_i(sa_config: Path, *args: str) -> bool:
    r = kubectl("auth", "can-i", *args, kubeconfig=sa_config, check=False)
    return r.stdout.strip() == "yes"


@pytest.mark.parametrize(("args", "allowed"), [
    (("watch", "mlmodels.serving.n1v1.io", "--all-namespaces"), True),
    (("patch", "mlmodels.serving.n1v1.io", "--subresource=status", "-n", "anywhere"), True),
    (("patch", "mlmodels.serving.n1v1.io", "-n", "anywhere"), True),
    (("create", "deployments.apps", "-n", "anywhere"), True),
    (("patch", "horizontalpodautoscalers.autoscaling", "-n", "anywhere"), True),
    (("create", "events", "-n", "anywhere"), True),
    (("watch", "customresourcedefinitions.apiextensions.k8s.io"), True),
    (("get", "secrets", "-n", "anywhere"), False),
    (("list", "pods", "--all-namespaces"), True),  # pod-level status causes
    (("delete", "pods", "-n", "anywhere"), False),
    (("get", "pods/log", "-n", "anywhere"), False),
    (("create", "mlmodels.serving.n1v1.io", "-n", "anywhere"), False),
    (("delete", "mlmodels.serving.n1v1.io", "-n", "anywhere"), False),
    (("create", "clusterrolebindings.rbac.authorization.k8s.io"), False),
    (("patch", "customresourcedefinitions.apiextensions.k8s.io"), False),
    (("update", "leases.coordination.k8s.io", "-n", "anywhere"), False),  # only its own
])
def test_service_account_permissions(sa_config: Path, args, allowed):
    assert can_i(sa_config, *args) is allowed, args


def test_the_lease_is_granted_by_name_in_the_release_namespace_only(
    release: ChartRelease, sa_config: Path
):
    ns, lease = release.namespace, release.fullname
    assert can_i(sa_config, "update", f"leases.coordination.k8s.io/{lease}", "-n", ns)
    assert can_i(sa_config, "get", f"leases.coordination.k8s.io/{lease}", "-n", ns)
    assert can_i(sa_config, "create", "leases.coordination.k8s.io", "-n", ns)
    assert not can_i(sa_config, "update", "leases.coordination.k8s.io/other", "-n", ns)
    assert not can_i(sa_config, "delete", f"leases.coordination.k8s.io/{lease}", "-n", ns)


def test_operator_reconciles_as_the_chart_service_account(
    release: ChartRelease, sa_config: Path, kubeconfig: Path, module_namespace,
    module_tmp: Path,
):
    models_ns = module_namespace("chart-models")
    env = release.operator_env()
    assert env["OPERATOR_NAMESPACES"] == ""  # cluster-wide: the ClusterRole is what counts
    with run_operator(sa_config, env, module_tmp / "operator-clusterwide.log") as op:
        apply_mlmodel(kubeconfig, mlmodel("iris", models_ns, autoscaling=True))
        dep = wait_child(kubeconfig, "deployment", models_ns, "iris")
        assert dep["metadata"]["ownerReferences"][0]["kind"] == "MLModel"
        # The runtime image default comes from the chart's operator.runtimeImage.
        images = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]
        assert "n1v1-ml-serving:0.1.0" in images
        wait_child(kubeconfig, "service", models_ns, "iris")
        hpa = wait_child(kubeconfig, "hpa", models_ns, "iris")
        # keda.enabled is off in this release: CPU and memory only (e2e/monitoring runs KEDA).
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
        wait_ready(kubeconfig, models_ns, "iris")
        # Delete: the operator removes its finalizer (a patch) and the MLModel goes.
        kubectl("delete", "mlmodel", "iris", "-n", models_ns, "--wait=false",
                kubeconfig=kubeconfig)
        wait_for(lambda: get_json(kubeconfig, "mlmodel", "iris", "-n", models_ns) is None,
                 timeout=60, describe="MLModel iris deleted")
        assert op.forbidden_lines() == [], "\n".join(op.forbidden_lines())
        assert op.proc.poll() is None, op.logs()[-3000:]
