"""Operator settings: OPERATOR_* environment variables, each also a CLI flag."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .builders import Monitoring
from .names import SETTINGS_ENV_PREFIX


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=SETTINGS_ENV_PREFIX, extra="ignore")

    namespaces: str = Field(
        default="", description="comma-separated namespaces; empty = cluster-wide"
    )
    runtime_image: str = Field(default="n1v1-ml-serving:0.1.0", description="runtime image default")
    peering_name: str = Field(default="", description="kopf peering object; empty = standalone")
    health_port: int = Field(default=8080, ge=0, le=65535, description="GET /healthz (0 = off)")
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="GET /metrics (0 = off)")
    log_level: str = Field(default="info", pattern="(?i)^(debug|info|warning|error)$")
    resync_seconds: float = Field(
        default=60.0, gt=0, description="level-triggered full reconcile period"
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

    def monitoring(self) -> Monitoring:
        return Monitoring(
            prometheus_url=self.prometheus_url.rstrip("/"),
            latency_window=self.latency_window,
            polling_seconds=self.keda_polling_seconds,
        )

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
