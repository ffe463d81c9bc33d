"""values.schema.json: typos and wrong types fail `helm template/install`, good values pass."""

from __future__ import annotations

import pytest

from tests.chart.chart_helpers import lint, template


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator": {"watchNamespace": ["a"]}}, "watchNamespace"),  # typo of watchNamespaces
        ({"imagee": {"tag": "1"}}, "imagee"),
        ({"serviceMonitor": {"enable": True}}, "enable"),
        ({"keda": {"enabled": True, "prometheus": "http://p:9090"}}, "prometheus"),
        ({"keda": {"enabled": True}}, "prometheusUrl"),  # enabled needs the address
        ({"leaderElection": {"enabled": "yes"}}, "enabled"),
        ({"peering": {"enabled": True}}, "peering"),  # replaced by leaderElection
        ({"leaderElection": {"leaseDurationSeconds": 1}}, "leaseDurationSeconds"),
        ({"replicaCount": "1"}, "replicaCount"),
        ({"replicaCount": -1}, "replicaCount"),
        ({"operator": {"logLevel": "verbose"}}, "logLevel"),
        ({"operator": {"metricsPort": 70000}}, "metricsPort"),
        ({"operator": {"watchNamespaces": ["Team_A"]}}, "watchNamespaces"),
        ({"operator": {"watchNamespaces": ["a", "a"]}}, "watchNamespaces"),
        ({"operator": {"watchNamespaces": "a,b"}}, "watchNamespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"resources": {"limits": {"memory": "lots"}}}, "memory"),
        ({"resources": {"limit": {"memory": "1Gi"}}}, "limit"),
        ({"keda": {"prometheusUrl": "prometheus:9090"}}, "prometheusUrl"),  # no scheme
        ({"keda": {"latencyWindow": "two minutes"}}, "latencyWindow"),
        ({"keda": {"pollingInterval": 0}}, "pollingInterval"),
        ({"serviceMonitor": {"interval": 30}}, "interval"),
        ({"nodeSelector": {"disk": True}}, "disk"),
    ],
)
def test_bad_values_are_rejected(values, complaint):
    result = template(values, check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 0},
        {"operator": {"watchNamespaces": ["team-a", "b"]}},
        {"replicaCount": 3, "leaderElection": {"leaseName": "p"}},
        {"resources": {"requests": {"cpu": "100m", "memory": 256}}},
        {"serviceMonitor": {"enabled": True, "scrapeTimeout": "", "interval": "1m30s"}},
        {"keda": {"enabled": True, "prometheusUrl": "http://prometheus-operated.monitoring.svc:9090",
                  "latencyWindow": "90s", "pollingInterval": 5}},
        {"global": {"imageRegistry": "r"}},  # what a parent chart passes down
    ],
)
def test_good_values_are_accepted(values):
    assert template(values, check=False).returncode == 0


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"operator": {"watchNamespaces": ["a", "b"]}, "replicaCount": 2},
        {"leaderElection": {"enabled": False}},
        {"serviceMonitor": {"enabled": True},
         "keda": {"enabled": True, "prometheusUrl": "http://prometheus:9090"}},
        {"serviceAccount": {"create": False, "name": "ops"}, "rbac": {"create": False}},
    ],
)
def test_helm_lint_is_clean(values):
    result = lint(values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    # --strict turns warnings into failures; also refuse INFO-level remarks (e.g. no icon).
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_lint_fails_on_schema_violation():
    result = lint({"replicaCount": "one"})
    assert result.returncode != 0
    assert "replicaCount" in result.stdout + result.stderr
