"""After a model (re)load the registry freezes the heap (serving_runtime.server.heap), so the
cyclic collector's full passes stop landing on requests. A reload must still free the
version it replaced: its generated evaluator functions sit in a reference cycle with their
namespace, which only a collection (not reference counting) can free."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref

from serving_runtime.server.metrics import RuntimeMetrics
from serving_runtime.server.registry import ModelRegistry
from serving_runtime.server.settings import Settings


def test_reload_freezes_the_heap_and_frees_the_replaced_model(zoo, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(zoo.models_dir / "xgb-binary", root / "xgb-binary")
    registry = ModelRegistry(Settings(models_dir=root), RuntimeMetrics())
    gc.unfreeze()

    assert asyncio.run(registry.reload("xgb-binary"))
    first = registry.models["xgb-binary"]
    assert first.fast_path is not None and first.fast_path.active
    assert gc.get_freeze_count() > 0  # what exists after a load is out of the collector's view
    # a generated function: part of a function <-> namespace cycle
    chunk = weakref.ref(first.runtime.evaluator._chunks[0])
    del first

    assert asyncio.run(registry.reload("xgb-binary"))
    assert registry.models["xgb-binary"].runtime.evaluator._chunks[0] is not chunk()
    assert chunk() is None, "the replaced version's evaluator was kept alive (frozen?)"


def test_young_collections_are_spaced_out_for_batch_bodies():
    from serving_runtime.server.heap import GEN0_THRESHOLD, tune_collector

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_collector()
        assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
    finally:
        gc.set_threshold(*saved)
