"""Fixtures for the operator's e2e tests.

- ``operator_kubeconfig`` (session): the chart is installed (with the CRD); returns the
  chart ServiceAccount's kubeconfig, which the operator process runs with.
- ``run_operator`` (function): factory ``run_operator(namespace, **settings) -> OperatorProcess``
  starting ``python -m mlmodel_operator`` watching that namespace; logs are printed at
  teardown (pytest shows them when the test fails); every process is stopped afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.helpers import kubectl, wait_for
from e2e.operator_process import OperatorProcess

CRD_NAME = "mlmodels.serving.n1v1.io"


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
        op = OperatorProcess(env, tmp_path / f"operator-{namespace}.log").start()
        started.append(op)
        return op

    yield run
    for op in started:
        op.stop()
        # Printed at teardown: pytest shows it under "Captured stdout teardown" on failure.
        print(f"----- operator log ({op.log_path.name}) -----\n{op.logs()[-20000:]}")


# ---------------------------------------------------------------- MLModel helpers


def base_mlmodel(name: str, **spec_sections: dict) -> dict:
    """A valid MLModel; keyword sections (model/serving/alerting) are merged in."""
    spec: dict = {
        "model": {
            "framework": "sklearn",
            "version": "1.0.0",
            "uri": "https://models.example.internal/m/1.0.0/model.tar.gz",
        },
    }
    for section, values in spec_sections.items():
        spec.setdefault(section, {}).update(values)
    return {
        "apiVersion": "serving.n1v1.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name},
        "spec": spec,
    }


class MLModels:
    """Read/write MLModels and their children in one namespace, as plain camelCase dicts."""

    def __init__(self, kubeconfig: Path, k8s, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.k8s = k8s
        self.ns = namespace

    def kubectl(self, *args: str, **kw):
        return kubectl(*args, "-n", self.ns, kubeconfig=self.kubeconfig, **kw)

    def apply(self, body: dict) -> None:
        import yaml

        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def patch_spec(self, name: str, spec: dict) -> None:
        """Merge-patch the MLModel's spec (`kubectl patch mlm NAME --type=merge`)."""
        import json

        self.kubectl("patch", "mlm", name, "--type=merge", "-p", json.dumps({"spec": spec}))

    def get(self, kind: str, name: str) -> dict | None:
        import json

        r = self.kubectl("get", kind, name, "-o", "json", check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr:
                return None
            raise AssertionError(r.stderr)
        return json.loads(r.stdout)

    def list(self, kind: str, selector: str) -> list[dict]:
        import json

        sel = ["-l", selector] if selector else []
        return json.loads(self.kubectl("get", kind, *sel, "-o", "json").stdout)["items"]

    def mlm(self, name: str) -> dict:
        obj = self.get("mlmodel", name)
        assert obj is not None, f"MLModel {name} missing"
        return obj

    def condition(self, name: str, ctype: str) -> dict:
        for c in (self.mlm(name).get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return c
        return {}

    def wait_condition(
        self, name: str, ctype: str, status: str, reason: str | None = None, timeout: float = 90
    ) -> dict:
        def check():
            obj = self.mlm(name)
            st = obj.get("status") or {}
            c = next((c for c in st.get("conditions") or [] if c["type"] == ctype), {})
            ok = (
                c.get("status") == status
                and (reason is None or c.get("reason") == reason)
                and st.get("observedGeneration") == obj["metadata"]["generation"]
            )
            return obj if ok else None

        return wait_for(
            check,
            timeout=timeout,
            describe=f"MLModel {name}: {ctype}={status} reason={reason}",
            observe=lambda: (
                self.kubectl("get", "mlm,deploy,rs,pods", "-o", "wide").stdout
                + "\n"
                + (self.mlm(name).get("status") and str(self.mlm(name)["status"]))
            ),
        )

    def wait_ready(self, name: str, timeout: float = 90) -> dict:
        return self.wait_condition(name, "Ready", "True", "AllReplicasReady", timeout)

    # The alert rules live in a PrometheusRule when monitoring.coreos.com is served, else in
    # the ConfigMap fallback. The cluster is shared (another suite may install that CRD), so
    # tests that are not about the choice accept either.
    def alert_rules_object(self, name: str) -> tuple[str, str, dict] | None:
        """(kind, object name, object) of the model's alert rules, or None."""
        cm = self.get("configmap", f"{name}-alert-rules")
        if cm is not None:
            return "configmap", f"{name}-alert-rules", cm
        r = self.kubectl(
            "get", "prometheusrules.monitoring.coreos.com", name, "-o", "json", check=False
        )
        if r.returncode == 0:
            import json

            return "prometheusrule", name, json.loads(r.stdout)
        return None

    def alert_rules_text(self, name: str) -> str | None:
        """The rule file (YAML) of the model, from whichever object holds it."""
        import yaml

        found = self.alert_rules_object(name)
        if found is None:
            return None
        kind, _, obj = found
        return obj["data"]["rules.yaml"] if kind == "configmap" else yaml.safe_dump(obj["spec"])


@pytest.fixture(name="base_mlmodel")
def base_mlmodel_fixture() -> Callable[..., dict]:
    """``base_mlmodel(name, model={...}, serving={...}, alerting={...}) -> dict``."""
    return base_mlmodel


@pytest.fixture
def mlmodels(operator_kubeconfig: Path, kubeconfig: Path, k8s, namespace: str) -> MLModels:
    """Acts as the admin (a user), never with the operator's credentials."""
    del operator_kubeconfig  # only needed for its side effect: the CRD is installed
    return MLModels(kubeconfig, k8s, namespace)
