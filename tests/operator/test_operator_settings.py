"""Operator settings: OPERATOR_* env vars, overridden by flags."""

from __future__ import annotations

import pytest
from mlmodel_operator.settings import OperatorSettings, load_settings


def test_defaults_are_the_contract(monkeypatch):
    for k in (
        "NAMESPACES",
        "RUNTIME_IMAGE",
        "PEERING_NAME",
        "HEALTH_PORT",
        "METRICS_PORT",
        "LOG_LEVEL",
        "RESYNC_SECONDS",
        "WATCH_TIMEOUT_SECONDS",
    ):
        monkeypatch.delenv(f"OPERATOR_{k}", raising=False)
    s = load_settings([])
    assert s == OperatorSettings(
        namespaces="",
        runtime_image="n1v1-ml-serving:0.1.0",
        peering_name="",
        health_port=8080,
        metrics_port=9090,
        log_level="info",
        resync_seconds=60.0,
        watch_timeout_seconds=60,
    )
    assert s.namespace_list() == []


def test_env_then_flags(monkeypatch):
    monkeypatch.setenv("OPERATOR_NAMESPACES", "a, b,,c")
    monkeypatch.setenv("OPERATOR_RUNTIME_IMAGE", "from-env:1")
    monkeypatch.setenv("OPERATOR_HEALTH_PORT", "18080")
    s = load_settings(["--runtime-image", "from-flag:2", "--peering-name", "mlm"])
    assert s.namespace_list() == ["a", "b", "c"]
    assert s.runtime_image == "from-flag:2"
    assert s.peering_name == "mlm"
    assert s.health_port == 18080


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("OPERATOR_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="log_level"):
        load_settings([])
