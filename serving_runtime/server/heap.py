"""Keep the cyclic garbage collector's full collections off the request path.

Measured here: with the RF-10 and XGB-100 models loaded, a full collection scans ~120k
tracked objects (modules, frameworks, models, generated evaluator code) and takes ~60 ms on
one core. CPython starts one whenever enough objects have survived younger collections,
which under sustained load lands on a random request: p99 of 64-request batches was 114 ms
and the loop looked overloaded long enough to shed. Freezing after each model load moves
everything that exists then out of the collector's view (`gc.freeze`), so later collections
scan only what requests allocate.

A reload unfreezes first and collects, so the replaced model's reference cycles (generated
functions and their namespace) are freed rather than kept forever in the frozen set. That
full collection runs on the event loop: requests in flight wait for it (~60 ms) once per
reload (once for all models at start-up) instead of at random under load. Cyclic garbage
that is still referenced at that moment (a replaced model held by a request in a worker
thread) stays frozen until the next reload's collection frees it.

The youngest generation's threshold is raised too: parsing one 64-request /predict/batch
body creates ~6,500 lists and dicts, all alive until the parse ends, so the default
threshold (700) ran ~9 young collections inside every parse, each scanning the half-built
body: 390 us per parse instead of 275 us, measured. Request garbage is freed by reference
counting, so the larger threshold scans no more in total; cyclic garbage waits longer.
"""

from __future__ import annotations

import gc
import time

GEN0_THRESHOLD = 10_000


def tune_collector() -> None:
    """Young collections every GEN0_THRESHOLD net allocations (the older generations keep
    CPython's default ratios)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, gc.get_threshold()[0]), gen1, gen2)


def settle_after_load() -> float:
    """Collect what the last load left behind, then freeze the survivors.
    Returns the seconds it took (logged by the caller)."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started
