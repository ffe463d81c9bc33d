"""Which MLModels need a reconcile: a de-duplicating queue drained by a few threads.

kopf runs a sync handler in its thread pool and keeps, for every object with an event in
flight, that object's latest body until the handler returns. At scale (1,000 MLModels
applied at once) every MLModel, Deployment, Service, ConfigMap and pod waited that way
behind eight busy threads: the operator held 690 MB and reconciled in arrival order, so no
MLModel turned Ready until the last one had its children. Now handlers only decide whether
an event matters and add the MLModel's key here (microseconds, no body kept):

- a key is in the queue at most once: a burst of events for one MLModel costs one
  reconcile, which reads the live state anyway;
- a key added while it is being reconciled is queued again once that ends, so no change
  that arrived during a reconcile is missed;
- a failed reconcile is retried after a delay (`add_after`), as kopf's TemporaryError was.

Like client-go's workqueue, minus rate limiting. No kopf and no API calls here.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name


class WorkQueue:
    def __init__(self, process: Callable[[Key, str], None], workers: int = 8) -> None:
        self._process = process
        self._workers = workers
        self._queue: OrderedDict[Key, str] = OrderedDict()  # key -> the first trigger
        self._processing: set[Key] = set()
        self._again: dict[Key, str] = {}  # added while processing
        self._delayed: list[tuple[float, int, Key, str]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._again)

    def add(self, key: Key, trigger: str) -> bool:
        """Queue `key`; False when it already waits (the change is covered)."""
        with self._cond:
            if self._stopped:
                return False
            if key in self._processing:
                if key in self._again:
                    return False
                self._again[key] = trigger
                return True
            if key in self._queue:
                return False
            self._queue[key] = trigger
            self._cond.notify()
            return True

    def add_after(self, key: Key, delay: float, trigger: str) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key, trigger))
            self._cond.notify()

    def _promote_due(self) -> float | None:
        """Move due delayed keys into the queue; seconds until the next one (None: none)."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key, trigger = heapq.heappop(self._delayed)
            if key in self._processing:
                self._again.setdefault(key, trigger)
            else:
                self._queue.setdefault(key, trigger)
        return self._delayed[0][0] - now if self._delayed else None

    def _take(self) -> tuple[Key, str] | None:
        with self._cond:
            while True:
                if self._stopped:
                    return None
                wait = self._promote_due()
                if self._queue:
                    key, trigger = self._queue.popitem(last=False)
                    self._processing.add(key)
                    return key, trigger
                self._cond.wait(wait)

    def _done(self, key: Key) -> None:
        with self._cond:
            self._processing.discard(key)
            trigger = self._again.pop(key, None)
            if trigger is not None and not self._stopped:
                self._queue.setdefault(key, trigger)
                self._cond.notify()

    def _run_one(self, key: Key, trigger: str) -> None:
        try:
            self._process(key, trigger)
        except Exception:  # noqa: BLE001 - a worker must survive any one reconcile
            log.exception("reconcile of %s/%s failed", *key)
        finally:
            self._done(key)

    def _worker(self) -> None:
        while (item := self._take()) is not None:
            self._run_one(*item)

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._worker, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def drain(self) -> int:
        """Process every queued key in the calling thread (tests, or a queue without
        workers); returns how many were processed."""
        done = 0
        while True:
            with self._cond:
                self._promote_due()
                if not self._queue:
                    return done
                key, trigger = self._queue.popitem(last=False)
                self._processing.add(key)
            self._run_one(key, trigger)
            done += 1

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking keys; wait up to `timeout` for the reconciles in progress."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
