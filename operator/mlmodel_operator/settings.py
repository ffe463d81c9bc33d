"""Operator settings: OPERATOR_* environment variables, each also a CLI flag."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .builders import Monitoring
from .leader import Timings
from .names import OPERATOR_NAME, SETTINGS_ENV_PREFIX
from .network_policy import Access

_LABEL_PAIR = r"[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*"  # k=v of OPERATOR_POD_LABELS
SERVICEACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=SETTINGS_ENV_PREFIX, extra="ignore")

    namespaces: str = Field(
        default="", description="comma-separated namespaces; empty = cluster-wide"
    )
    runtime_image: str = Field(default="n1v1-ml-serving:0.1.0", description="runtime image default")
    leader_election: bool = Field(
        default=False,
        description="hold a coordination.k8s.io Lease to reconcile (several replicas: one "
        "leads, the others wait); the chart turns it on",
    )
    leader_election_namespace: str = Field(
        default="",
        description="namespace of the Lease; empty = the pod's own (its ServiceAccount's)",
    )
    leader_election_lease: str = Field(default=OPERATOR_NAME, description="name of the Lease")
    lease_duration_seconds: float = Field(
        default=10.0, ge=2, le=300,
        description="a Lease not renewed for this long is taken over by a standby",
    )
    renew_deadline_seconds: float = Field(
        default=7.0, ge=1, le=299,
        description="a leader that cannot renew for this long stops (before the Lease expires)",
    )
    retry_period_seconds: float = Field(
        default=2.0, gt=0, le=60, description="how often the Lease is renewed or tried",
    )
    health_port: int = Field(default=8080, ge=0, le=65535, description="GET /healthz (0 = off)")
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="GET /metrics (0 = off)")
    log_level: str = Field(default="info", pattern="(?i)^(debug|info|warning|error)$")
    resync_seconds: float = Field(
        default=60.0, gt=0, description="period of the operator-wide level-triggered resync"
    )
    reconcile_workers: int = Field(
        default=8, ge=1, le=64, description="threads reconciling MLModels in parallel",
    )
    resync_verify_every: int = Field(
        default=10, ge=1, le=1000,
        description="every Nth resync re-reads and re-applies every child, even unchanged ones",
    )
    watch_timeout_seconds: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="each watch is renewed after this long; a silent one is dropped 15 s later",
    )

    prometheus_url: str = Field(
        default="",
        pattern=r"^(https?://[^\s]+)?$",
        description="Prometheus that KEDA's latency trigger queries, e.g. "
        "http://prometheus-operated.monitoring.svc:9090 (empty: no latency autoscaling)",
    )
    latency_window: str = Field(
        default=Monitoring.latency_window, pattern=r"^[0-9]+(ms|s|m|h)$",
        description="rate window of the p95 latency query (a few scrape intervals)",
    )
    keda_polling_seconds: int = Field(
        default=Monitoring.polling_seconds, ge=1, le=3600,
        description="how often KEDA evaluates the latency trigger",
    )

    scrape_namespaces: str = Field(
        default="monitoring", pattern=r"^[a-z0-9-]*(\s*,\s*[a-z0-9-]+)*\s*$",
        description="comma-separated namespaces whose pods may scrape every runtime's "
        "/metrics through its NetworkPolicy (Prometheus' namespace; empty: none)",
    )
    pod_labels: str = Field(
        default="", pattern=rf"^({_LABEL_PAIR}(,{_LABEL_PAIR})*)?$",
        description="this operator's pod labels, k=v,k=v (the chart sets its selector labels): "
        "only those pods of its namespace reach the runtime's port; empty: every pod there",
    )

    def access(self) -> Access:
        """What every MLModel's NetworkPolicy lets in besides its callers: the scrapers and,
        when it runs in a pod, this operator (it reads the runtime's /health)."""
        try:
            own = Path(SERVICEACCOUNT_NAMESPACE).read_text().strip()
        except OSError:  # not in a pod: its requests come from the node, not a pod
            own = ""
        return Access(
            scrape_namespaces=tuple(n.strip() for n in self.scrape_namespaces.split(",")
                                    if n.strip()),
            operator_namespace=own,
            operator_pod_labels=tuple(
                (k, v) for k, _, v in (p.partition("=") for p in self.pod_labels.split(",") if p)
            ),
        )

    def monitoring(self) -> Monitoring:
        return Monitoring(
            prometheus_url=self.prometheus_url.rstrip("/"),
            latency_window=self.latency_window,
            polling_seconds=self.keda_polling_seconds,
        )

    @model_validator(mode="after")
    def _lease_timings(self) -> OperatorSettings:
        self.timings()  # retry < renew deadline < lease duration, or a ValueError naming them
        return self

    def timings(self) -> Timings:
        return Timings(self.lease_duration_seconds, self.renew_deadline_seconds,
                       self.retry_period_seconds)

    def lease_namespace(self) -> str:
        if self.leader_election_namespace:
            return self.leader_election_namespace
        try:
            return Path(SERVICEACCOUNT_NAMESPACE).read_text().strip() or "default"
        except OSError:
            return "default"

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]


def load_settings(argv: Sequence[str] | None = None) -> OperatorSettings:
    """Env first, flags override (a flag left out keeps the env value or the default)."""
    parser = argparse.ArgumentParser(
        prog="python -m mlmodel_operator", description="Reconcile MLModel resources (kopf)."
    )
    for name, field in OperatorSettings.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            help=f"{field.description or ''} (env {SETTINGS_ENV_PREFIX}{name.upper()}, "
            f"default {field.default!r})",
        )
    args = parser.parse_args(list(argv) if argv is not None else None)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    return OperatorSettings(**overrides)
