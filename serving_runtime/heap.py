"""Keep the cyclic garbage collector's full collections off the request path.

Measured here: with the RF-10 and XGB-100 models loaded, a full collection scans ~120k
tracked objects (modules, frameworks, models, generated evaluator code) and takes ~60 ms on
one core. CPython starts one whenever enough objects have survived younger collections,
which under sustained load lands on a random request: p99 of 64-request batches was 114 ms
and the loop looked overloaded long enough to shed. Freezing after each model load moves
everything that exists then out of the collector's view (`gc.freeze`), so later collections
scan only what requests allocate.

A reload unfreezes first and collects, so the replaced model's reference cycles (generated
functions and their namespace) are freed rather than kept forever in the frozen set; that
costs one full collection per reload, paid by the reload, not by every Nth request.
"""

from __future__ import annotations

import gc
import time


def settle_after_load() -> float:
    """Collect what the last load left behind, then freeze the survivors.
    Returns the seconds it took (logged by the caller)."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started
