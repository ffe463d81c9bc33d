"""The cluster's Prometheus (e2e/cluster/monitoring.sh) as the tests ask it: PromQL queries
and the state of alerts, read from its HTTP API through the `prometheus` Service."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

NAMESPACE = "monitoring"
SERVICE = "prometheus"


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant-vector result of `expr` (each {"metric": {...}, "value": [t, "v"]})."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of `expr`, or None when the result is empty."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} gave {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def alerts(self, alertname: str, namespace: str) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts of that name for that namespace."""
        r = httpx.get(f"{self.url}/api/v1/alerts", timeout=10)
        r.raise_for_status()
        return [a for a in r.json()["data"]["alerts"]
                if a["labels"].get("alertname") == alertname
                and a["labels"].get("namespace") == namespace]

    def firing(self, alertname: str, namespace: str) -> bool:
        # ALERTS is what Prometheus itself records: what a dashboard or Alertmanager sees.
        return bool(self.query(
            f'ALERTS{{alertname="{alertname}",namespace="{namespace}",alertstate="firing"}}'))

    def rule_loaded(self, alertname: str, namespace: str) -> bool:
        """The rule is in Prometheus' rule files (prometheus-operator put it there)."""
        r = httpx.get(f"{self.url}/api/v1/rules", params={"type": "alert"}, timeout=10)
        r.raise_for_status()
        return any(rule["name"] == alertname and rule["labels"].get("namespace") == namespace
                   for g in r.json()["data"]["groups"] for rule in g["rules"])

    def targets_up(self, namespace: str, pod_prefix: str) -> int:
        """How many of the model's pods Prometheus scrapes successfully right now."""
        v = self.value(f'count(up{{namespace="{namespace}",pod=~"{pod_prefix}-.*"}} == 1)')
        return int(v or 0)


def wait_seconds(predicate: Any, timeout: float, describe: str, interval: float = 1.0) -> float:
    """Seconds until `predicate()` is truthy; fails with `describe` after `timeout`."""
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < timeout:
        try:
            last = predicate()
        except httpx.HTTPError as exc:  # Prometheus restarting its rule manager: retry
            last = exc
        else:
            if last:
                return time.monotonic() - t0
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {describe} (last: {last!r})")
