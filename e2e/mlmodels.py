"""MLModels: read/write MLModels and their children in one namespace (operator and
real-pod suites)."""

from __future__ import annotations

from pathlib import Path

from e2e.helpers import kubectl, wait_for


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
