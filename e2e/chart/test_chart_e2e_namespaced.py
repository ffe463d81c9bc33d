"""The chart with `operator.watchNamespaces` and two replicas: one Role per watched
namespace, the Lease's Role in the release namespace, and an operator that serves those
namespaces and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.chart.chart_release import install_chart, run_operator
from e2e.chart.mlmodels import apply_mlmodel, get_json, mlmodel, wait_child, wait_ready
from e2e.helpers import kubectl, wait_for


@pytest.fixture(scope="module")
def setup(kubeconfig: Path, module_namespace, module_tmp: Path):
    op_ns = module_namespace("chart-nsop", {"pod-security.kubernetes.io/enforce": "restricted"})
    watched = module_namespace("chart-watched")
    other = module_namespace("chart-other")
    rel = install_chart(kubeconfig, op_ns, tmp=module_tmp, values={
        "operator": {"watchNamespaces": [watched]},
        "replicaCount": 2,
    })
    yield rel, watched, other
    rel.helm("uninstall", rel.release, check=False, timeout=180)


def can_i(cfg: Path, *args: str) -> bool:
    return kubectl("auth", "can-i", *args, kubeconfig=cfg, check=False).stdout.strip() == "yes"


def test_rbac_is_scoped_to_the_watched_namespace(setup, kubeconfig: Path, module_tmp: Path):
    rel, watched, other = setup
    assert get_json(kubeconfig, "role", rel.fullname, "-n", watched)
    assert get_json(kubeconfig, "rolebinding", rel.fullname, "-n", watched)
    assert get_json(kubeconfig, "role", rel.fullname, "-n", other) is None
    cfg = rel.sa_kubeconfig(module_tmp / "ns-sa.kubeconfig")
    assert can_i(cfg, "create", "deployments.apps", "-n", watched)
    assert can_i(cfg, "update", f"leases.coordination.k8s.io/{rel.fullname}", "-n",
                 rel.namespace)
    assert not can_i(cfg, "update", f"leases.coordination.k8s.io/{rel.fullname}", "-n",
                     watched)
    assert not can_i(cfg, "create", "deployments.apps", "-n", other)
    assert not can_i(cfg, "list", "mlmodels.serving.n1v1.io", "--all-namespaces")


def test_leader_election_settings_and_rolling_strategy(setup, kubeconfig: Path):
    rel, watched, _ = setup
    env = rel.operator_env()
    assert env["OPERATOR_NAMESPACES"] == watched
    assert env["OPERATOR_LEADER_ELECTION"] == "true"
    assert env["OPERATOR_LEADER_ELECTION_NAMESPACE"] == rel.namespace
    assert env["OPERATOR_LEADER_ELECTION_LEASE"] == rel.fullname
    assert rel.deployment()["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rel.deployment()["spec"]["replicas"] == 2
    assert get_json(kubeconfig, "pdb", rel.fullname, "-n", rel.namespace)


def test_operator_serves_only_the_watched_namespace(setup, kubeconfig: Path, module_tmp: Path):
    rel, watched, other = setup
    cfg = rel.sa_kubeconfig(module_tmp / "ns-sa-run.kubeconfig")
    with run_operator(cfg, rel.operator_env(), module_tmp / "operator-ns.log") as op:
        apply_mlmodel(kubeconfig, mlmodel("watched-model", watched))
        apply_mlmodel(kubeconfig, mlmodel("other-model", other))
        wait_child(kubeconfig, "deployment", watched, "watched-model")
        wait_ready(kubeconfig, watched, "watched-model")
        # It reconciled as the holder of the chart's Lease (in the release namespace).
        lease = get_json(kubeconfig, "lease", rel.fullname, "-n", rel.namespace) or {}
        assert (lease.get("spec") or {}).get("holderIdentity"), lease
        assert get_json(kubeconfig, "deployment", "other-model", "-n", other) is None
        kubectl("delete", "mlmodel", "watched-model", "-n", watched, "--wait=false",
                kubeconfig=kubeconfig)
        wait_for(lambda: get_json(kubeconfig, "mlmodel", "watched-model", "-n", watched)
                 is None, timeout=60, describe="MLModel watched-model deleted")
        assert op.forbidden_lines() == [], "\n".join(op.forbidden_lines())
    # The other namespace's MLModel never got a finalizer, so it deletes without an operator.
    kubectl("delete", "mlmodel", "other-model", "-n", other, "--timeout=30s",
            kubeconfig=kubeconfig)
