"""The alert rules the operator writes are valid Prometheus rules, and each alert fires on
synthetic series (promtool test rules) and stays quiet on healthy ones."""

from __future__ import annotations

from pathlib import Path

import yaml

from e2e.helpers import promtool, wait_for


def _render(template: str, value: str, pod: str = "") -> str:
    # The only templates the rules use; promtool renders them, we say what it must render.
    return (
        template.replace("{{ $value | humanizeDuration }}", value)
        .replace("{{ $value | humanizePercentage }}", value)
        .replace("{{ $labels.pod }}", pod)
    )


def test_alert_rules_check_and_fire(
    run_operator, mlmodels, namespace, base_mlmodel, tmp_path: Path
):
    run_operator(namespace)
    mlmodels.apply(
        base_mlmodel(
            "iris",
            alerting={
                "latencyP95ThresholdMilliseconds": 100,
                "errorRateThresholdPercent": 2,
                "for": "2m",
                "labels": {"team": "risk"},
            },
        )
    )
    rules_text = wait_for(lambda: mlmodels.alert_rules_text("iris"), describe="alert rules")
    (tmp_path / "rules.yaml").write_text(rules_text)
    check = promtool("check", "rules", str(tmp_path / "rules.yaml"))
    assert "SUCCESS: 4 rules found" in check.stdout + check.stderr

    rules = {r["alert"]: r for r in yaml.safe_load(rules_text)["groups"][0]["rules"]}
    ns = namespace
    sel = f'namespace="{ns}",model_name="iris"'
    pod = "iris-7d9f8b6c5-x2x4z"
    common = {"namespace": ns, "mlmodel": "iris", "team": "risk"}

    def expect(alert: str, value: str = "", extra: dict | None = None) -> dict:
        r = rules[alert]
        return {
            "eval_time": "10m",
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": {**common, "severity": r["labels"]["severity"], **(extra or {})},
                    "exp_annotations": {
                        k: _render(v, value, pod) for k, v in r["annotations"].items()
                    },
                }
            ],
        }

    failing = {
        "interval": "1m",
        "input_series": [
            # every request between 50 ms and 250 ms: p95 = 0.05 + 0.2 * 0.95 = 240 ms
            {"series": f'inference_latency_seconds_bucket{{{sel},le="0.05"}}', "values": "0x15"},
            {"series": f'inference_latency_seconds_bucket{{{sel},le="0.25"}}', "values": "0+10x15"},
            {"series": f'inference_latency_seconds_bucket{{{sel},le="+Inf"}}', "values": "0+10x15"},
            # 20 % errors (10 server + 10 client of 80+10+10) against a 2 % threshold: a refused
            # request counts, since countClientErrors defaults to true
            {"series": f'inference_requests_total{{{sel},status="success"}}', "values": "0+80x15"},
            {
                "series": f'inference_requests_total{{{sel},status="server_error"}}',
                "values": "0+10x15",
            },
            {
                "series": f'inference_requests_total{{{sel},status="client_error"}}',
                "values": "0+10x15",
            },
            # the only pod is down
            {"series": f'up{{namespace="{ns}",pod="{pod}"}}', "values": "0x15"},
            # the runtime's gauge: the latest load in this pod failed
            {"series": f'model_load_failed{{{sel},pod="{pod}"}}', "values": "1x15"},
        ],
        "alert_rule_test": [
            expect("MLModelHighLatencyP95", "240ms"),
            expect("MLModelHighErrorRate", "20%"),
            expect("MLModelServiceDown"),
            expect("MLModelLoadFailures", extra={"pod": pod}),
        ],
    }
    healthy = {
        "interval": "1m",
        "input_series": [
            {"series": f'inference_latency_seconds_bucket{{{sel},le="0.05"}}', "values": "0+10x15"},
            {"series": f'inference_latency_seconds_bucket{{{sel},le="+Inf"}}', "values": "0+10x15"},
            {"series": f'inference_requests_total{{{sel},status="success"}}', "values": "0+100x15"},
            {
                "series": f'inference_requests_total{{{sel},status="server_error"}}',
                "values": "0+1x15",
            },  # 1 % < 2 %
            {"series": f'up{{namespace="{ns}",pod="{pod}"}}', "values": "1x15"},
            {"series": f'model_load_failed{{{sel},pod="{pod}"}}', "values": "0x15"},
        ],
        "alert_rule_test": [{"eval_time": "10m", "alertname": a, "exp_alerts": []} for a in rules],
    }
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [failing, healthy]}
        )
    )
    result = promtool("test", "rules", str(test_file), check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
