"""High availability: leader election on a real Lease, and two operator replicas failing over.

The operators run as the Helm chart's ServiceAccount, so these tests also prove the chart's
Role for Leases is enough (and the Lease is the one the chart names: its full name, which is
also the ServiceAccount's name).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.helpers import kubectl, wait_for

HANDOVER_LIMIT_S = 15.0  # the bound: kill the leader, a standby leads within this


def _identity(sa_kubeconfig: Path) -> tuple[str, str]:
    """(namespace, name) of the ServiceAccount a kubeconfig acts as."""
    user = yaml.safe_load(sa_kubeconfig.read_text())["users"][0]["name"]
    _, _, namespace, name = user.split(":")
    return namespace, name


def _lease(kubeconfig: Path, namespace: str, name: str) -> dict | None:
    r = kubectl("get", "lease", name, "-n", namespace, "-o", "json", kubeconfig=kubeconfig,
                check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _holder(kubeconfig: Path, namespace: str, name: str) -> str | None:
    lease = _lease(kubeconfig, namespace, name) or {}
    return (lease.get("spec") or {}).get("holderIdentity")


def _metric(op, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(op.metrics()) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _reconciles(op) -> float:
    return _metric(op, "mlmodel_operator_reconciles_total")


def _instance_of(op) -> str:
    """The Lease identity an operator process logged when it started waiting."""
    for line in op.logs().splitlines()[::-1]:
        if "leader election:" in line and " waits for Lease " in line:
            return line.split("leader election: ", 1)[1].split(" waits", 1)[0]
    raise AssertionError(f"no identity in the log:\n{op.logs()[-3000:]}")


def _events(mlmodels, name: str) -> list[dict]:
    items = json.loads(mlmodels.kubectl(
        "get", "events", "--field-selector",
        f"involvedObject.kind=MLModel,involvedObject.name={name}", "-o", "json").stdout)["items"]
    return sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])


def test_two_replicas_one_leads_and_a_killed_leader_is_replaced_within_15s(
    run_operator, operator_kubeconfig, kubeconfig, mlmodels, namespace, base_mlmodel,
):
    lease_ns, lease_name = _identity(operator_kubeconfig)
    settings = {"leader_election": "true", "leader_election_namespace": lease_ns,
                "leader_election_lease": lease_name, "resync_seconds": "3600"}
    a = run_operator(namespace, **settings)
    wait_for(lambda: _holder(kubeconfig, lease_ns, lease_name) == _instance_of(a), timeout=30,
             describe="the first replica to hold the Lease")
    b = run_operator(namespace, **settings)
    assert b.healthy(), "a standby serves /healthz (its probes must not restart it)"
    assert _metric(b, "mlmodel_operator_leader") == 0
    assert _metric(a, "mlmodel_operator_leader") == 1

    mlmodels.apply(base_mlmodel("ha"))
    mlmodels.wait_ready("ha")
    time.sleep(2)
    assert _reconciles(a) > 0
    assert _reconciles(b) == 0, "the standby must not reconcile while the leader lives"
    assert _holder(kubeconfig, lease_ns, lease_name) == _instance_of(a)

    # Kill the leader (no release of the Lease) and change the spec at once.
    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    mlmodels.patch_spec("ha", {"model": {"version": "2.0.0"}})
    wait_for(lambda: _holder(kubeconfig, lease_ns, lease_name) == _instance_of(b),
             timeout=30, interval=0.2, describe="the standby to take the Lease over")
    took_over = time.monotonic() - killed

    def rolled() -> bool:
        dep = mlmodels.get("deployment", "ha") or {}
        env = {e["name"]: e.get("value") for c in dep["spec"]["template"]["spec"]["containers"]
               for e in c.get("env") or []}
        return env.get("MODEL_VERSION") == "2.0.0"

    wait_for(rolled, timeout=30, interval=0.2, describe="the change made during the gap")
    applied = time.monotonic() - killed
    print(f"handover: Lease taken {took_over:.1f}s, the gap's change applied {applied:.1f}s "
          "after the leader was killed")
    assert took_over < HANDOVER_LIMIT_S
    assert applied < HANDOVER_LIMIT_S
    mlmodels.wait_condition("ha", "Ready", "True", "AllReplicasReady", 60)

    # No double writes: every Event came from the replica leading at that time, and the
    # Deployment was created once and updated once.
    events = _events(mlmodels, "ha")
    by = {(e["reason"], e.get("reportingInstance")) for e in events}
    assert {i for _, i in by} <= {_instance_of(a), _instance_of(b)}
    creates = [e for e in events if e["reason"] == "Created"
               and "Deployment ha," in e["message"]]
    updates = [e for e in events if e["reason"] == "Updated"
               and "Deployment ha" in e["message"]]
    assert [e["reportingInstance"] for e in creates] == [_instance_of(a)]
    assert [e["reportingInstance"] for e in updates] == [_instance_of(b)], updates

    # A clean stop hands the Lease over at once: the restarted first replica takes it back
    # at its next try, not after the expiry.
    a.start()
    assert _metric(a, "mlmodel_operator_leader") == 0
    b.stop(signal.SIGTERM)
    stopped = time.monotonic()
    wait_for(lambda: _holder(kubeconfig, lease_ns, lease_name) == _instance_of(a),
             timeout=30, interval=0.2, describe="the released Lease to be taken")
    assert time.monotonic() - stopped < 6, "a released Lease waits for no expiry"
    assert "released Lease" in b.logs()
    wait_for(lambda: _metric(a, "mlmodel_operator_leader") == 1, timeout=10,
             describe="the new leader's gauge")


def test_lease_holder_stops_writing_once_it_cannot_renew(kubeconfig, make_namespace):
    """Two electors on the real API server: the write fence closes after the renew deadline
    without a renewal, and only then may the other take over (after the full duration)."""
    from kubernetes import config
    from mlmodel_operator.apply import Kube
    from mlmodel_operator.leader import LeaderElector, Timings

    ns = make_namespace()
    kube = Kube(config.new_client_from_config(config_file=str(kubeconfig)))
    t = Timings(duration=3.0, renew_deadline=2.0, retry=0.5)
    first = LeaderElector(kube, ns, "lock", "first", t)
    second = LeaderElector(kube, ns, "lock", "second", t)
    assert first.try_acquire_or_renew() and first.may_write()
    assert not second.try_acquire_or_renew(), "a held Lease is not taken"

    # `first` stops renewing (a paused or partitioned leader).
    paused = time.monotonic()
    wait_for(lambda: not first.may_write(), timeout=5, interval=0.05,
             describe="the fence to close")
    fence_closed = time.monotonic() - paused
    stop = threading.Event()
    assert second.acquire(stop)
    taken = time.monotonic() - paused
    assert 1.8 <= fence_closed <= 2.6
    # The other replica waits the whole duration from its first look, so the old leader's
    # fence (renew deadline) closed before anyone else could write.
    assert taken >= t.duration - 0.3 and taken > fence_closed
    assert not first.try_acquire_or_renew(), "the old leader does not take it back"
    lease = _lease(kubeconfig, ns, "lock")
    assert lease and lease["spec"]["holderIdentity"] == "second"
    assert lease["spec"]["leaseTransitions"] == 1


def test_a_leader_that_loses_its_lease_stops_and_exits(
    run_operator, operator_kubeconfig, kubeconfig, namespace,
):
    """Another identity takes the Lease over (as after a partition): the leader cannot
    renew, stops writing after the renew deadline and exits 1 without releasing it."""
    lease_ns, lease_name = _identity(operator_kubeconfig)
    op = run_operator(namespace, leader_election="true", leader_election_namespace=lease_ns,
                      leader_election_lease=lease_name, lease_duration_seconds="6",
                      renew_deadline_seconds="4", retry_period_seconds="1")
    wait_for(lambda: _holder(kubeconfig, lease_ns, lease_name) == _instance_of(op),
             timeout=30, describe="the operator to lead")
    from datetime import UTC, datetime

    def intrude() -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        kubectl("patch", "lease", lease_name, "-n", lease_ns, "--type=merge", "-p",
                json.dumps({"spec": {"holderIdentity": "intruder", "renewTime": now,
                                     "leaseDurationSeconds": 60}}), kubeconfig=kubeconfig)

    intrude()
    taken = time.monotonic()
    assert op.proc is not None
    op.proc.wait(timeout=30)
    assert op.proc.returncode == 1
    assert 3.5 <= time.monotonic() - taken < 20
    assert "could not renew Lease" in op.logs()
    assert "released Lease" not in op.logs()
    assert _holder(kubeconfig, lease_ns, lease_name) == "intruder"
    kubectl("delete", "lease", lease_name, "-n", lease_ns, kubeconfig=kubeconfig)
