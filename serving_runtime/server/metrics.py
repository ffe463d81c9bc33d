"""Prometheus metrics of one runtime (names in docs/contracts.md).

Each app gets its own registry, so several apps in one process (tests) do not clash.
With several worker processes (`--workers N`) the metrics use prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set up by `python -m serving_runtime`), so
a scrape of any worker sees the sum over all of them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NamedTuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Fine at the low end: a compiled tree evaluator answers in tens of microseconds.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
)
UNKNOWN_MODEL = "unknown"
log = logging.getLogger("serving_runtime.server.metrics")
# |Δ| of a shadow's answer from the champion's: a probability or a regression output.
DELTA_BUCKETS = (1e-6, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class ModelCounters(NamedTuple):
    """The per-model series a request updates (label lookups done once, cached)."""

    success: Counter
    client_error: Counter
    server_error: Counter
    latency: Histogram

    def failed(self, status_code: int) -> Counter:
        return self.client_error if status_code < 500 else self.server_error


class RuntimeMetrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
            reg = None  # values live in the shared files; the collector reads them
        else:
            reg = self.registry
        self.requests = Counter(
            "inference_requests_total", "Inference requests by model and outcome",
            ["model_name", "status"], registry=reg,
        )
        self.latency = Histogram(
            "inference_latency_seconds", "Time to answer a successful inference HTTP request "
            "(a /predict/batch: once per model it used)",
            ["model_name"], buckets=LATENCY_BUCKETS, registry=reg,
        )
        self.in_flight = Gauge(
            "inference_requests_in_flight", "Inference requests being served",
            registry=reg, multiprocess_mode="livesum",
        )
        self.load_failures = Counter(
            "model_load_failures_total", "Failed model loads and reloads", ["model_name"],
            registry=reg,
        )
        self.load_failed = Gauge(
            "model_load_failed", "1 while the model's latest load or reload failed (the "
            "previous version, if any, still serves); 0 after a good one", ["model_name"],
            registry=reg, multiprocess_mode="livemax",
        )
        self.loaded = Gauge(
            "model_loaded", "1 for the model version being served", ["model_name", "version"],
            registry=reg, multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "model_reloads_total", "Model (re)loads by result", ["model_name", "result"],
            registry=reg,
        )
        self.fast_path = Gauge(
            "model_fast_path", "1 when the compiled tree evaluator serves the model, 0 when "
            "the framework's own predict does (model unsupported, or the load-time agreement "
            "check failed: see the logs)", ["model_name"],
            registry=reg, multiprocess_mode="livemax",
        )
        # --- a model's challenger (server/rollout.py; docs/rollouts.md) ---
        self.rollout_requests = Counter(
            "rollout_requests_total", "Answers of a model with a canary, by version and role "
            "(champion | canary); a canary failure the champion then answered counts once "
            "for each", ["model_name", "version", "role", "status"], registry=reg,
        )
        self.rollout_latency = Histogram(
            "rollout_latency_seconds", "Time to answer, by the version that answered (models "
            "with a canary)", ["model_name", "version", "role"], buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.challenger_serving = Gauge(
            "rollout_challenger_serving", "1 while the model's challenger serves (canary) or "
            "is evaluated (shadow); 0 once it failed to load or was rolled back",
            ["model_name", "version", "mode"], registry=reg, multiprocess_mode="livemax",
        )
        self.rollbacks = Counter(
            "rollout_rollbacks_total", "Challengers the runtime stopped using, by reason "
            "(load_failed | error_rate | latency)", ["model_name", "version", "reason"],
            registry=reg,
        )
        self.shadow_rows = Counter(
            "shadow_rows_total", "Rows queued for the shadow, by result (evaluated | dropped: "
            "the queue was full or the shadow went away | failed: the shadow raised)",
            ["model_name", "result"], registry=reg,
        )
        self.shadow_disagreements = Counter(
            "shadow_disagreements_total", "Evaluated rows where the shadow's answer differs "
            "(classifiers: another label; regressors: beyond a 1e-6 relative tolerance)",
            ["model_name"], registry=reg,
        )
        self.shadow_delta = Histogram(
            "shadow_delta", "Per row: the largest |Δ probability| of one class (classifiers) "
            "or |Δ prediction| (regressors) between shadow and champion", ["model_name"],
            buckets=DELTA_BUCKETS, registry=reg,
        )
        self.shadow_predict = Histogram(
            "shadow_predict_seconds", "One shadow batch's model call, per version (role "
            "champion | shadow) on the same rows", ["model_name", "role"],
            buckets=LATENCY_BUCKETS, registry=reg,
        )
        # --- authentication (server/auth.py): refused requests, HTTP and gRPC ---
        self.auth_failures = Counter(
            "auth_failures_total", "Requests refused for their bearer token, by reason "
            "(missing: no Authorization header | invalid: a wrong token or a malformed "
            "header)", ["reason"], registry=reg,
        )
        self._auth_failure_children = {r: self.auth_failures.labels(r)
                                       for r in ("missing", "invalid")}
        self._children: dict[str, ModelCounters] = {}

    def for_model(self, name: str) -> ModelCounters:
        """The model's series, cached: the label lookup costs more than the increment."""
        c = self._children.get(name)
        if c is None:
            c = ModelCounters(
                self.requests.labels(name, "success"),
                self.requests.labels(name, "client_error"),
                self.requests.labels(name, "server_error"),
                self.latency.labels(name),
            )
            self._children[name] = c
        return c

    def model_swapped(self, name: str, old_version: str | None, new_version: str) -> None:
        if old_version is not None and old_version != new_version:
            if self.multiprocess:  # shared files cannot drop a series; 0 says "not served"
                self.loaded.labels(name, old_version).set(0)
            else:
                self.loaded.remove(name, old_version)
        self.loaded.labels(name, new_version).set(1)

    def auth_failed(self, reason: str) -> None:
        self._auth_failure_children[reason].inc()

    # --- the shadow's reports (server/rollout.py, ShadowQueue) ---

    def shadow_evaluated(self, champion: Any, rows: int, disagree: int, delta: Any,
                         champion_s: float, shadow_s: float) -> None:
        name = champion.name
        self.shadow_rows.labels(name, "evaluated").inc(rows)
        self.shadow_disagreements.labels(name).inc(disagree)
        if delta is not None:
            hist = self.shadow_delta.labels(name)
            for d in delta.tolist():
                hist.observe(d)
        self.shadow_predict.labels(name, "champion").observe(champion_s)
        self.shadow_predict.labels(name, "shadow").observe(shadow_s)

    def shadow_dropped(self, name: str, rows: int) -> None:
        self.shadow_rows.labels(name, "dropped").inc(rows)

    def shadow_failed(self, name: str, rows: int, exc: BaseException) -> None:
        self.shadow_rows.labels(name, "failed").inc(rows)
        log.warning("shadow evaluation failed", extra={
            "model_name": name, "rows": rows, "error": f"{type(exc).__name__}: {exc}"[:300]})

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
