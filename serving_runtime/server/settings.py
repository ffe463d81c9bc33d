"""Runtime settings: environment variables (names in docs/contracts.md), overridden by
the CLI flags of `python -m serving_runtime`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving_runtime.models.trees.accelerate import CHECK_ROWS
from serving_runtime.server import auth, tls
from serving_runtime.server.rollout import ChallengerConfig, parse_challengers


def available_cpus() -> int:
    """CPUs this process may use: the cgroup CPU quota (a container's `limits.cpu`) when
    there is one, else the affinity mask. Never less than 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    quota: float | None = None
    try:  # cgroup v2
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if us > 0:
                quota = us / period_us
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    models_dir: Path = Field(default=Path("/app/models"), description="folder of model folders")
    preload_models: str = Field(
        default="",
        description="comma-separated model names loaded before ready; empty = every folder",
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(
        default=8081, ge=0, le=65535,
        description="port of the Open Inference Protocol over gRPC (same HOST); 0 = no gRPC "
        "server (docs/grpc.md)",
    )
    workers: int = Field(default=1, ge=1)
    inference_threads: int = Field(default_factory=available_cpus, ge=1)
    allow_unsafe_loading: bool = False
    log_level: str = "info"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    fast_path: bool = Field(
        default=True,
        description="serve tree ensembles with the compiled evaluator when its load-time "
        "check agrees with the framework; false = the framework's own predict",
    )
    fast_path_check_rows: int = Field(
        default=CHECK_ROWS, ge=100, description="random rows of the load-time agreement check"
    )
    shed_lag_ms: float = Field(
        default=50.0, ge=0,
        description="answer hot requests 503 + Retry-After while the event loop runs this "
        "late (ms) under a stream of requests; 0 = never shed",
    )
    # Slow and many clients (serving_runtime/server/http_protocol.py).
    header_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="a request head must arrive within this many seconds of its first byte "
        "(or of the connection opening), else 408 and close",
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="the whole body must arrive within this many seconds of the head, else "
        "408 naming what was missing, and close",
    )
    max_connections_per_worker: int = Field(
        default=512, ge=1,
        description="open connections per worker process; beyond it a new connection is "
        "answered 503 + Retry-After and closed (GET /v2/health/live still answers)",
    )

    drain_seconds: float = Field(
        default=10.0, ge=0,
        description="after SIGTERM: seconds of not-ready answering with Connection: close "
        "before the remaining idle connections are closed (the process exits earlier once "
        "no connection is open); preStop sleep + this + 5 s must fit "
        "terminationGracePeriodSeconds",
    )
    exit_on_load_failure: bool = Field(
        default=False,
        description="exit with code 3 (reason in TERMINATION_MESSAGE_PATH) when an expected "
        "model fails to load at start-up; false = stay up, not ready",
    )
    termination_message_path: Path = Field(
        default=Path("/dev/termination-log"),
        description="Kubernetes termination-message file written before that exit",
    )

    challengers: str = Field(
        default="",
        description='each model\'s challenger, JSON: {"<model>": {"mode": "canary"|"shadow", '
        '"weight": <percent>, "max_error_rate_percent", "max_latency_p95_ms", '
        '"min_requests"}}; its folder is MODELS_DIR/.challengers/<model> (docs/rollouts.md)',
    )
    shadow_queue_rows: int = Field(
        default=4096, ge=1,
        description="rows waiting for shadow evaluation per worker process; beyond it a "
        "request's rows are dropped (shadow_rows_total{result=\"dropped\"}), never waited for",
    )

    shadow_budget_percent: float = Field(
        default=5.0, gt=0, le=100,
        description="percent of one core's time the shadow may spend per worker process; "
        "beyond it (a saturated process) rows are dropped and counted, not evaluated",
    )

    # Authentication and TLS (serving_runtime/server/auth.py, tls.py; docs/runtime.md).
    auth_tokens_dir: Path | None = Field(
        default=None,
        description="directory of accepted bearer tokens, one per file (a mounted Secret; "
        "names starting with '.' skipped), re-read on change; set = every API request "
        "needs 'Authorization: Bearer <token>'; set but holding none = exit 2",
    )
    auth_health: Literal["open", "token"] = Field(
        default="open",
        description="open: /health and /v2/health/* answer without a token (the kubelet's "
        "probes carry none); token: they need one too",
    )
    auth_metrics: Literal["open", "token"] = Field(
        default="open",
        description="open: /metrics answers without a token (Prometheus scrapes; the "
        "NetworkPolicy limits who reaches the port); token: it needs one too",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of the HTTP and gRPC ports; with TLS_KEY_FILE "
        "they serve TLS (1.2 at least); reloaded when the file changes",
    )
    tls_key_file: Path | None = Field(
        default=None, description="PEM private key of TLS_CERT_FILE; both or neither",
    )

    @model_validator(mode="after")
    def _auth_and_tls(self) -> Settings:
        # Checked at start-up so that a missing token or half a TLS setting exits 2 with
        # the reason, instead of serving open or plain HTTP.
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (("TLS_CERT_FILE", "TLS_KEY_FILE") if self.tls_key_file is None
                              else ("TLS_KEY_FILE", "TLS_CERT_FILE"))
            raise ValueError(f"{given} is set but {missing} is not: set both (TLS) or "
                             f"neither (plain HTTP)")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            tls.check_pair(self.tls_cert_file, self.tls_key_file)
        if self.auth_tokens_dir is not None:
            auth.check_token_dir(self.auth_tokens_dir)
        return self

    @field_validator("challengers")
    @classmethod
    def _parsable_challengers(cls, v: str) -> str:
        parse_challengers(v)  # ValueError names the problem; the process exits 2
        return v

    @property
    def challenger_configs(self) -> dict[str, ChallengerConfig]:
        return parse_challengers(self.challengers)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        v = v.lower()
        if v not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError("log_level must be one of critical, error, warning, info, debug")
        return v

    @property
    def preload_model_names(self) -> list[str]:
        return [n.strip() for n in self.preload_models.split(",") if n.strip()]

    # Model files (serving_runtime/models/folder.py): checked with stat before reading.
    max_artifact_bytes: int = Field(
        default=2 * 1024**3, ge=1,
        description="largest model artifact file (and, for a skops zip, its unpacked "
        "size) a load reads; larger ones are refused from their size alone",
    )
