"""The level-triggered backstop: one operator-wide loop, not a timer per MLModel.

A kopf timer per object needs a finalizer on every MLModel (kopf must stop the timer before
the object goes), so deleting an MLModel - or its namespace - hung while the operator was
down. This loop lists the MLModels once a period (metadata only, paged) and reconciles each,
spread evenly over the period so a thousand of them make a steady trickle of requests, not
a burst. Reconciles skip children whose desired manifest is unchanged (written.py); every
`verify_every`-th round forgets that memory first, so even a lost watch event is repaired.
No kopf here: handlers.py starts and stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name


class Resync:
    def __init__(
        self,
        list_keys: Callable[[], list[Key]],
        reconcile_one: Callable[[str, str, bool], None],
        period: float,
        verify_every: int = 10,
    ) -> None:
        self._list = list_keys
        self._reconcile = reconcile_one
        self.period = period
        self.verify_every = max(1, verify_every)
        self.rounds = 0

    def run_round(self, stop: threading.Event, verify: bool) -> int:
        """One pass over every MLModel, spread over the period; returns how many were
        reconciled (fewer when stopped)."""
        start = time.monotonic()
        try:
            keys = self._list()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("resync: could not list MLModels: %s", exc)
            return 0
        done = 0
        for i, (namespace, name) in enumerate(keys):
            due = start + self.period * i / len(keys)
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            try:
                self._reconcile(namespace, name, verify)
            except Exception as exc:  # noqa: BLE001 - one MLModel must not stop the others
                log.warning("resync of %s/%s failed: %s", namespace, name, exc)
            done += 1
        return done

    def run(self, stop: threading.Event) -> None:
        """Rounds until `stop`; the first one period after the start (kopf's resume
        handlers have just reconciled everything)."""
        while not stop.wait(self.period if self.rounds == 0 else 0.0):
            start = time.monotonic()
            self.rounds += 1
            self.run_round(stop, verify=self.rounds % self.verify_every == 0)
            # A round that took longer than the period starts the next one at once.
            if stop.wait(max(0.0, start + self.period - time.monotonic())):
                return

    def start(self, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(stop,), name="resync", daemon=True)
        t.start()
        return t
