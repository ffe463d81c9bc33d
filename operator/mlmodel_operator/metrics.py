"""The operator's own Prometheus metrics (served on OPERATOR_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "mlmodel_operator_reconciles_total", "Reconciles of MLModels", ["trigger", "result"]
)
ERRORS = Counter("mlmodel_operator_errors_total", "Failed reconciles by reason", ["reason"])
DURATION = Histogram(
    "mlmodel_operator_reconcile_duration_seconds",
    "Time spent in one reconcile",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHILD_WRITES = Counter(
    "mlmodel_operator_child_writes_total",
    "Children created, updated or deleted",
    ["kind", "action"],
)
MODEL_READY = Gauge(
    "mlmodel_operator_model_ready",
    "1 while the MLModel's Ready condition is True",
    ["namespace", "name"],
)
CHILD_EVENTS_DROPPED = Counter(
    "mlmodel_operator_child_events_dropped_total",
    "Child watch events that needed no reconcile (the echo of the operator's own write, or "
    "a status change the MLModel's status does not read)",
    ["kind"],
)
LEADER = Gauge(
    "mlmodel_operator_leader",
    "1 while this replica holds the leader Lease and reconciles (1 without leader election)",
)
