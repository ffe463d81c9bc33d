"""workqueue.py: each MLModel queued at most once, nothing missed while it is reconciled."""

from __future__ import annotations

import threading
import time

from mlmodel_operator.workqueue import WorkQueue


def test_a_burst_for_one_key_costs_one_reconcile():
    seen: list[tuple[tuple[str, str], str]] = []
    q = WorkQueue(lambda key, trigger: seen.append((key, trigger)), workers=0)
    assert q.add(("ns", "a"), "create")
    for _ in range(50):
        assert not q.add(("ns", "a"), "child:Deployment")
    assert q.add(("ns", "b"), "pod")
    assert q.drain() == 2
    assert seen == [(("ns", "a"), "create"), (("ns", "b"), "pod")]  # first come, first served


def test_a_change_that_arrives_during_the_reconcile_is_reconciled_again_after_it():
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    def process(key: tuple[str, str], trigger: str) -> None:
        runs.append(trigger)
        if len(runs) == 1:
            started.set()
            release.wait(5)

    q = WorkQueue(process, workers=2)
    q.start()
    try:
        q.add(("ns", "a"), "create")
        assert started.wait(5)
        # Two more events while the first reconcile runs: one more reconcile, after it,
        # never a second one in parallel for the same MLModel.
        assert q.add(("ns", "a"), "child:Deployment")
        assert not q.add(("ns", "a"), "pod")
        time.sleep(0.1)
        assert runs == ["create"]
        release.set()
        deadline = time.monotonic() + 5
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert runs == ["create", "child:Deployment"]
    finally:
        q.stop()


def test_a_failed_reconcile_comes_back_after_its_delay_and_a_crash_does_not_kill_a_worker():
    runs: list[str] = []

    def process(key: tuple[str, str], trigger: str) -> None:
        runs.append(trigger)
        if trigger == "boom":
            raise RuntimeError("unexpected")

    q = WorkQueue(process, workers=1)
    q.start()
    try:
        q.add(("ns", "a"), "boom")
        t0 = time.monotonic()
        q.add_after(("ns", "b"), 0.3, "retry")
        deadline = time.monotonic() + 5
        while "retry" not in runs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runs == ["boom", "retry"]
        assert time.monotonic() - t0 >= 0.3
    finally:
        q.stop()
    assert not q.add(("ns", "c"), "late"), "a stopped queue takes nothing"
