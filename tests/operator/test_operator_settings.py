"""Operator settings: OPERATOR_* env vars, overridden by flags."""

from __future__ import annotations

import pytest
from mlmodel_operator.settings import OperatorSettings, load_settings


def test_defaults_are_the_contract(monkeypatch):
    for k in (
        "NAMESPACES",
        "RUNTIME_IMAGE",
        "LEADER_ELECTION",
        "LEADER_ELECTION_NAMESPACE",
        "LEADER_ELECTION_LEASE",
        "LEASE_DURATION_SECONDS",
        "RENEW_DEADLINE_SECONDS",
        "RETRY_PERIOD_SECONDS",
        "RESYNC_VERIFY_EVERY",
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
        leader_election=False,
        leader_election_namespace="",
        leader_election_lease="n1v1-mlmodel-operator",
        lease_duration_seconds=10.0,
        renew_deadline_seconds=7.0,
        retry_period_seconds=2.0,
        health_port=8080,
        metrics_port=9090,
        log_level="info",
        resync_seconds=60.0,
        resync_verify_every=10,
        watch_timeout_seconds=60,
    )
    assert s.namespace_list() == []


def test_env_then_flags(monkeypatch):
    monkeypatch.setenv("OPERATOR_NAMESPACES", "a, b,,c")
    monkeypatch.setenv("OPERATOR_RUNTIME_IMAGE", "from-env:1")
    monkeypatch.setenv("OPERATOR_HEALTH_PORT", "18080")
    monkeypatch.setenv("OPERATOR_LEADER_ELECTION", "true")
    s = load_settings(["--runtime-image", "from-flag:2", "--leader-election-lease", "mlm"])
    assert s.namespace_list() == ["a", "b", "c"]
    assert s.runtime_image == "from-flag:2"
    assert s.leader_election is True
    assert s.leader_election_lease == "mlm"
    assert s.health_port == 18080


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("OPERATOR_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="log_level"):
        load_settings([])


def test_lease_timings_that_could_let_two_leaders_act_are_refused():
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        load_settings(["--lease-duration-seconds", "5", "--renew-deadline-seconds", "7"])


def test_the_lease_namespace_defaults_to_the_pods_own(monkeypatch, tmp_path):
    from mlmodel_operator import settings as mod

    sa_ns = tmp_path / "namespace"
    sa_ns.write_text("ops\n")
    monkeypatch.setattr(mod, "SERVICEACCOUNT_NAMESPACE", str(sa_ns))
    assert OperatorSettings().lease_namespace() == "ops"
    assert OperatorSettings(leader_election_namespace="x").lease_namespace() == "x"
    monkeypatch.setattr(mod, "SERVICEACCOUNT_NAMESPACE", str(tmp_path / "missing"))
    assert OperatorSettings().lease_namespace() == "default"
