"""The chart's RBAC is load-bearing: take one needed rule away and the operator fails."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.chart.chart_release import install_chart, run_operator
from e2e.chart.mlmodels import apply_mlmodel, delete_mlmodel, get_json, mlmodel
from e2e.helpers import kubectl, wait_for


def test_without_the_deployments_rule_the_operator_is_forbidden(
    kubeconfig: Path, module_namespace, module_tmp: Path
):
    op_ns = module_namespace("chart-neg")
    models = module_namespace("chart-neg-models")
    rel = install_chart(kubeconfig, op_ns, tmp=module_tmp,
                        values={"operator": {"watchNamespaces": [models]}})
    try:
        role = get_json(kubeconfig, "role", rel.fullname, "-n", models)
        idx = [i for i, r in enumerate(role["rules"]) if r["resources"] == ["deployments"]]
        assert len(idx) == 1, role["rules"]
        patch = [{"op": "remove", "path": f"/rules/{idx[0]}"}]
        kubectl("patch", "role", rel.fullname, "-n", models, "--type=json",
                "-p", json.dumps(patch), kubeconfig=kubeconfig)
        cfg = rel.sa_kubeconfig(module_tmp / "neg-sa.kubeconfig")
        with run_operator(cfg, rel.operator_env(), module_tmp / "operator-neg.log") as op:
            apply_mlmodel(kubeconfig, mlmodel("denied", models))
            lines = wait_for(
                lambda: [x for x in op.forbidden_lines() if "deployments" in x],
                timeout=90, describe="a Forbidden error about deployments in the log",
                observe=lambda: op.logs()[-3000:],
            )
            assert lines
            assert get_json(kubeconfig, "deployment", "denied", "-n", models) is None
        delete_mlmodel(kubeconfig, models, "denied")
    finally:
        rel.uninstall()
