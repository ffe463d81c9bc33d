"""The chart's prometheus-adapter query computes per-pod p95 latency, and 0 for idle pods.

prometheus-adapter fills <<.Series>>, <<.LabelMatchers>> and <<.GroupBy>> before it asks
Prometheus; here they are filled the same way and the query runs as a recording rule under
`promtool test rules` on synthetic histogram series (no Prometheus needed).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from e2e.helpers import promtool
from tests.chart.chart_helpers import template


def adapter_rule() -> dict:
    out = template({"prometheusAdapter": {"enabled": True}},
                   extra=["--show-only", "templates/prometheus-adapter-rules.yaml"]).stdout
    cm = yaml.safe_load(out)
    (rule,) = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    return rule


def filled(query: str) -> str:
    # What the adapter sends for `kubectl get --raw .../namespaces/ns/pods/*/<metric>`.
    return (query.replace("<<.Series>>", "inference_latency_seconds_bucket")
            .replace("<<.LabelMatchers>>", 'namespace="ns",pod=~"busy|idle"')
            .replace("<<.GroupBy>>", "pod"))


def test_adapter_query_gives_p95_per_pod_and_zero_when_idle(tmp_path: Path):
    rule = adapter_rule()
    metric = rule["name"]["as"]
    rules = {"groups": [{"name": "adapter", "rules": [
        {"record": metric, "expr": filled(rule["metricsQuery"])}]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    promtool("check", "rules", str(tmp_path / "rules.yaml"))

    busy = 'inference_latency_seconds_bucket{namespace="ns",pod="busy",model_name="m",le="%s"}'
    idle = 'inference_latency_seconds_bucket{namespace="ns",pod="idle",model_name="m",le="%s"}'
    count = 'inference_latency_seconds_count{namespace="ns",pod="%s",model_name="m"}'
    series = [
        # busy: 60 requests a minute, all between 50 and 100 ms -> p95 = 0.05 + 0.95*0.05.
        {"series": busy % "0.05", "values": "0+0x10"},
        {"series": busy % "0.1", "values": "0+60x10"},
        {"series": busy % "+Inf", "values": "0+60x10"},
        {"series": count % "busy", "values": "0+60x10"},
        # idle: served requests long ago, none in the window -> quantile NaN -> reported 0.
        {"series": idle % "0.1", "values": "5x10"},
        {"series": idle % "+Inf", "values": "5x10"},
        {"series": count % "idle", "values": "5x10"},
    ]
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [{
                "expr": metric,
                "eval_time": "5m",
                "exp_samples": [
                    {"labels": f'{metric}{{pod="busy"}}', "value": 0.0975},
                    {"labels": f'{metric}{{pod="idle"}}', "value": 0},
                ],
            }],
        }],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", str(tmp_path / "test.yaml"), cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
