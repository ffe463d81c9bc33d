"""`helm upgrade` with changed values (the operator then acts on them) and `helm uninstall`."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.chart.chart_release import install_chart, run_operator
from e2e.chart.mlmodels import apply_mlmodel, get_json, mlmodel, wait_child
from e2e.helpers import kubectl


def test_upgrade_then_uninstall(kubeconfig: Path, module_namespace, module_tmp: Path):
    op_ns = module_namespace("chart-life", {"pod-security.kubernetes.io/enforce": "restricted"})
    models = module_namespace("chart-life-models")
    rel = install_chart(kubeconfig, op_ns, tmp=module_tmp,
                        values={"operator": {"watchNamespaces": [models]}})
    try:
        name = rel.fullname
        before = rel.deployment()
        assert before["spec"]["strategy"]["type"] == "RollingUpdate"  # leader election is on
        assert rel.operator_env()["OPERATOR_RUNTIME_IMAGE"] == "n1v1-ml-serving:0.1.0"

        # 1. A changed value: the default runtime image and the log level.
        rel.upgrade({"operator": {"runtimeImage": "registry.e2e/n1v1-ml-serving:9.9.9",
                                  "logLevel": "debug"}}, "--reuse-values", tmp=module_tmp)
        env = rel.operator_env()
        assert env["OPERATOR_RUNTIME_IMAGE"] == "registry.e2e/n1v1-ml-serving:9.9.9"
        assert env["OPERATOR_LOG_LEVEL"] == "debug"
        assert env["OPERATOR_NAMESPACES"] == models  # --reuse-values kept it
        after = rel.deployment()
        assert after["metadata"]["generation"] > before["metadata"]["generation"]
        assert after["status"].get("availableReplicas") == 1, after["status"]
        history = json.loads(rel.helm("history", rel.release, "-o", "json").stdout)
        assert [h["revision"] for h in history] == [1, 2]
        assert history[-1]["status"] == "deployed"

        # The upgraded settings reach the operator: a new MLModel gets the new image.
        cfg = rel.sa_kubeconfig(module_tmp / "life-sa.kubeconfig")
        with run_operator(cfg, env, module_tmp / "operator-life.log") as op:
            apply_mlmodel(kubeconfig, mlmodel("upgraded", models))
            dep = wait_child(kubeconfig, "deployment", models, "upgraded")
            images = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]
            assert images == ["registry.e2e/n1v1-ml-serving:9.9.9"], images
            kubectl("delete", "mlmodel", "upgraded", "-n", models, "--timeout=60s",
                    kubeconfig=kubeconfig)
            assert op.forbidden_lines() == [], "\n".join(op.forbidden_lines())

        # 2. Two replicas: a PodDisruptionBudget; turning leader election off again needs
        # one replica, and takes the Lease Role away and recreates instead of rolling.
        assert rel.deployment()["spec"]["strategy"]["type"] == "RollingUpdate"
        rel.upgrade({"replicaCount": 2}, "--reuse-values", tmp=module_tmp)
        assert get_json(kubeconfig, "pdb", name, "-n", op_ns)["spec"]["maxUnavailable"] == 1
        refused = rel.upgrade({"leaderElection": {"enabled": False}}, "--reuse-values",
                              tmp=module_tmp, check=False)
        assert refused.returncode != 0
        assert "replicaCount > 1 needs leaderElection.enabled" in refused.stderr
        rel.upgrade({"replicaCount": 1, "leaderElection": {"enabled": False}}, "--reuse-values",
                    tmp=module_tmp)
        assert rel.deployment()["spec"]["strategy"]["type"] == "Recreate"
        assert get_json(kubeconfig, "pdb", name, "-n", op_ns) is None
        assert get_json(kubeconfig, "role", f"{name}-leader-election", "-n", op_ns) is None

        # 3. Back to cluster-wide: the Role goes, the ClusterRole gets the namespaced rules.
        rel.upgrade({"operator": {"watchNamespaces": []}}, "--reuse-values", tmp=module_tmp)
        assert get_json(kubeconfig, "role", name, "-n", models) is None
        cr = get_json(kubeconfig, "clusterrole", name)
        assert any("mlmodels" in r["resources"] for r in cr["rules"])
    finally:
        rel.uninstall()

    # Uninstall removes everything the release created except the CRDs (Helm never deletes
    # crds/, so MLModels survive an uninstall).
    for args in (["deployment", name, "-n", op_ns], ["serviceaccount", name, "-n", op_ns],
                 ["service", f"{name}-metrics", "-n", op_ns], ["clusterrole", name],
                 ["clusterrolebinding", name]):
        assert get_json(kubeconfig, *args) is None, args
    assert get_json(kubeconfig, "crd", "mlmodels.serving.n1v1.io")
    assert rel.helm("status", rel.release, check=False).returncode != 0
