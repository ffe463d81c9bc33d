"""Bad manifests are rejected by the API server itself (OpenAPI + CEL in crds/), with a
message that names the field. Only the CRD is needed: no operator runs here."""

from __future__ import annotations

import copy

import pytest
import yaml

from e2e.helpers import kubectl

GOOD = {
    "apiVersion": "serving.n1v1.io/v1alpha1",
    "kind": "MLModel",
    "metadata": {"name": "iris"},
    "spec": {
        "model": {
            "framework": "sklearn",
            "version": "1.0.0",
            "uri": "https://models.example/iris.tar.gz",
        }
    },
}


def _with(path: str, value, name: str = "iris") -> dict:
    body = copy.deepcopy(GOOD)
    body["metadata"]["name"] = name
    node = body
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is None:
        node.pop(keys[-1])
    else:
        node[keys[-1]] = value
    return body


CASES = [
    ("uri-scheme", _with("spec.model.uri", "ftp://host/m"), "spec.model.uri"),
    ("uri-file", _with("spec.model.uri", "file:///etc/passwd"), "spec.model.uri"),
    ("pvc-no-path", _with("spec.model.uri", "pvc://claim"), "spec.model.uri"),
    ("sha256", _with("spec.model.sha256", "XYZ"), "spec.model.sha256"),
    ("framework", _with("spec.model.framework", "pytorch"), "spec.model.framework"),
    ("no-model", _with("spec.model", None), "spec.model"),
    ("replicas", _with("spec.serving", {"replicas": -1}), "spec.serving.replicas"),
    (
        "min-gt-max",
        _with("spec.serving", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
        "spec.serving.autoscaling.minReplicas",
    ),
    (
        "cpu-target",
        _with("spec.serving", {"autoscaling": {"targetCPUUtilizationPercentage": 150}}),
        "spec.serving.autoscaling.targetCPUUtilizationPercentage",
    ),
    (
        "reserved-env",
        _with("spec.serving", {"env": [{"name": "MODELS_DIR", "value": "/"}]}),
        "spec.serving.env",
    ),
    (
        "bad-quantity",
        _with("spec.serving", {"resources": {"requests": {"cpu": "lots"}}}),
        "spec.serving.resources.requests",
    ),
    (
        "error-rate",
        _with("spec.alerting", {"errorRateThresholdPercent": 0}),
        "spec.alerting.errorRateThresholdPercent",
    ),
    ("for", _with("spec.alerting", {"for": "soon"}), "spec.alerting.for"),
    ("typo", _with("spec.serving", {"replica": 2}), "spec.serving.replica"),
    ("name", _with("metadata.name", "9-lives", name="9-lives"), "metadata.name"),
]


@pytest.mark.parametrize(("case", "body", "field"), CASES, ids=[c[0] for c in CASES])
def test_invalid_manifest_rejected_naming_the_field(
    operator_kubeconfig, kubeconfig, namespace, case, body, field
):
    r = kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(body),
        kubeconfig=kubeconfig,
        check=False,
    )
    assert r.returncode != 0, f"{case}: accepted\n{r.stdout}"
    assert field in r.stderr, f"{case}: {r.stderr}"
    assert kubectl("get", "mlm", "-n", namespace, "-o", "name", kubeconfig=kubeconfig).stdout == ""


def test_valid_manifest_is_accepted_and_defaulted(operator_kubeconfig, kubeconfig, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(GOOD), kubeconfig=kubeconfig)
    got = yaml.safe_load(
        kubectl("get", "mlm", "iris", "-n", namespace, "-o", "yaml", kubeconfig=kubeconfig).stdout
    )
    assert got["spec"]["serving"]["replicas"] == 1
    assert got["spec"]["serving"]["autoscaling"]["targetCPUUtilizationPercentage"] == 70
    assert got["spec"]["alerting"]["latencyP95ThresholdMilliseconds"] == 100
