"""resync.py (the operator-wide loop) and leader.py's pure decisions.

The LeaderElector itself is tested against the real API server in
e2e/operator/test_operator_leader.py; here only what needs no API."""

from __future__ import annotations

import threading
import time

import pytest
from mlmodel_operator.leader import Timings, claim, micro_time, release_body
from mlmodel_operator.resync import Resync

# --- the resync loop ------------------------------------------------------------------------


def test_a_round_reconciles_every_mlmodel_spread_over_the_period():
    keys = [("a", f"m{i}") for i in range(5)]
    seen: list[tuple[str, str, bool, float]] = []
    t0 = time.monotonic()
    r = Resync(lambda: keys, lambda ns, n, v: seen.append((ns, n, v, time.monotonic() - t0)),
               period=1.0)
    assert r.run_round(threading.Event(), verify=False) == 5
    assert [(ns, n) for ns, n, _, _ in seen] == keys
    # Spread: the last one starts about 4/5 of the period after the first, not at once.
    assert seen[-1][3] - seen[0][3] >= 0.7


def test_one_failing_reconcile_does_not_stop_the_round_and_a_failed_listing_skips_it():
    seen: list[str] = []

    def reconcile(ns: str, name: str, verify: bool) -> None:
        if name == "bad":
            raise RuntimeError("boom")
        seen.append(name)

    r = Resync(lambda: [("a", "x"), ("a", "bad"), ("a", "y")], reconcile, period=0.05)
    assert r.run_round(threading.Event(), verify=False) == 3
    assert seen == ["x", "y"]

    def broken() -> list[tuple[str, str]]:
        raise OSError("API down")

    assert Resync(broken, reconcile, period=0.05).run_round(threading.Event(), False) == 0


def test_every_nth_round_verifies_and_stop_ends_the_loop():
    verified: list[bool] = []
    stop = threading.Event()

    def reconcile(ns: str, name: str, verify: bool) -> None:
        verified.append(verify)
        if len(verified) >= 6:
            stop.set()

    r = Resync(lambda: [("a", "m")], reconcile, period=0.02, verify_every=3)
    t = r.start(stop)
    t.join(5)
    assert not t.is_alive()
    assert verified[:6] == [False, False, True, False, False, True]


# --- the Lease decisions ----------------------------------------------------------------------

NOW = 1_800_000_000.0


def lease(holder: str | None, rv: str = "7", transitions: int = 2) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l", "namespace": "ops", "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10,
                     "acquireTime": micro_time(NOW - 100), "renewTime": micro_time(NOW - 1),
                     "leaseTransitions": transitions}}


def test_a_missing_lease_is_created_held_by_us():
    body = claim(None, namespace="ops", name="l", identity="me", duration=10, now=NOW,
                 expired=False)
    assert body is not None
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseTransitions"] == 0
    assert "resourceVersion" not in body["metadata"]


def test_another_holders_live_lease_is_left_alone_and_an_expired_one_taken_over():
    assert claim(lease("other"), namespace="ops", name="l", identity="me", duration=10,
                 now=NOW, expired=False) is None
    body = claim(lease("other"), namespace="ops", name="l", identity="me", duration=10,
                 now=NOW, expired=True)
    assert body is not None
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseTransitions"] == 3
    assert body["spec"]["acquireTime"] == micro_time(NOW)
    # The update carries the resourceVersion read: of two candidates only one can win.
    assert body["metadata"]["resourceVersion"] == "7"


def test_renewing_our_own_lease_keeps_its_acquire_time_and_transitions():
    body = claim(lease("me"), namespace="ops", name="l", identity="me", duration=10, now=NOW,
                 expired=False)
    assert body is not None
    assert body["spec"]["acquireTime"] == micro_time(NOW - 100)
    assert body["spec"]["leaseTransitions"] == 2
    assert body["spec"]["renewTime"] == micro_time(NOW)


def test_a_released_lease_is_free_for_anyone():
    freed = release_body(lease("me"), "me", NOW)
    assert freed is not None and freed["spec"]["holderIdentity"] is None
    assert freed["spec"]["leaseDurationSeconds"] == 1
    assert release_body(lease("other"), "me", NOW) is None
    body = claim(freed, namespace="ops", name="l", identity="next", duration=10, now=NOW,
                 expired=False)
    assert body is not None and body["spec"]["holderIdentity"] == "next"


@pytest.mark.parametrize("timings", [(10, 10, 2), (10, 7, 7), (5, 7, 2), (10, 7, 0)])
def test_timings_must_leave_the_leader_time_to_stop_before_the_lease_expires(timings):
    duration, renew, retry = timings
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        Timings(duration, renew, retry)
