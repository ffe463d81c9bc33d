"""The tools later tests depend on work: promtool validates rule files, helm renders charts
and checks a chart's kubeVersion against the real server version."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from e2e.helpers import helm, kubectl, promtool, unique_name

GOOD_RULES = """\
groups:
- name: e2e
  rules:
  - alert: HighErrorRate
    expr: sum(rate(http_requests_total{code=~"5.."}[5m])) > 1
    for: 5m
    labels: {severity: page}
    annotations: {summary: too many errors}
"""
# Unbalanced parenthesis: a PromQL parse error.
BROKEN_RULES = GOOD_RULES.replace("[5m])) > 1", "[5m]) > 1")


def test_promtool_accepts_good_rules_and_rejects_broken_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_RULES)
    ok = promtool("check", "rules", str(good))
    assert "SUCCESS: 1 rules found" in ok.stdout + ok.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_RULES)
    bad = promtool("check", "rules", str(broken), check=False)
    assert bad.returncode != 0, bad.stdout
    assert "FAILED" in bad.stdout + bad.stderr
    assert "parse error" in (bad.stdout + bad.stderr).lower(), bad.stdout + bad.stderr


def make_chart(root: Path, kube_version: str = ">=1.25.0-0") -> Path:
    chart = root / "hello"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "hello",
                "version": "0.1.0",
                "kubeVersion": kube_version,
            }
        )
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: {{ .Release.Name }}-greeting\n"
        "data:\n"
        "  greeting: {{ .Values.greeting | quote }}\n"
        "  kubeMajor: {{ .Capabilities.KubeVersion.Major | quote }}\n"
    )
    return chart


def test_helm_template_renders_a_chart(tmp_path: Path, kubeconfig: Path) -> None:
    chart = make_chart(tmp_path)
    out = helm(
        "template", "demo", str(chart), "--set", "greeting=hi there", kubeconfig=kubeconfig
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert len(docs) == 1, out
    assert docs[0]["kind"] == "ConfigMap"
    assert docs[0]["metadata"]["name"] == "demo-greeting"
    assert docs[0]["data"]["greeting"] == "hi there"


def test_helm_checks_kube_version_against_the_server(
    tmp_path: Path, kubeconfig: Path, namespace: str
) -> None:
    """Needs a real version stamp: an unstamped apiserver reports v0.0.0 and fails this."""
    version = json.loads(kubectl("version", "-o", "json", kubeconfig=kubeconfig).stdout)
    server = version["serverVersion"]
    assert server["major"] == "1" and int(server["minor"].rstrip("+")) >= 25, server

    ok_chart = make_chart(tmp_path / "ok")
    release = unique_name("hello")
    helm(
        "install", release, str(ok_chart), "-n", namespace, "--dry-run=server",
        kubeconfig=kubeconfig,
    )

    too_new = make_chart(tmp_path / "future", kube_version=">=9.0.0-0")
    refused = helm(
        "install", release, str(too_new), "-n", namespace, "--dry-run=server",
        kubeconfig=kubeconfig, check=False,
    )
    assert refused.returncode != 0
    assert "kubeVersion" in refused.stderr and server["gitVersion"] in refused.stderr, (
        refused.stderr
    )
