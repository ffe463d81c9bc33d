"""Per-call latency of the compiled LightGBM fast path against `Booster.predict` with one
thread, for 1, 8, 64 and 256 rows: a binary model of 100 trees (num_leaves 31, 20
features), the best of 5 rounds per figure.

    .venv/bin/python bench/lightgbm_fast_path.py [--trees 100] [--leaves 31]

The crossover (where `Booster.predict` starts to win) is what LightGBMTreeEvaluator's
`max_rows` encodes; the machine's speed drifts, so only figures of one run compare.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import lightgbm as lgb
import numpy as np

from serving_runtime.models.runtimes.lightgbm.model_file import parse_model_text
from serving_runtime.models.runtimes.lightgbm.trees import compile_lightgbm

ROUNDS = 5
BATCHES = (1, 8, 64, 256)


def _per_call(fn: Callable[[], object], budget_s: float = 0.2) -> float:
    """Best-of-ROUNDS seconds per call, each round ~budget_s / ROUNDS long."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(budget_s / ROUNDS / once))
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--features", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, args.features))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": args.leaves, "verbose": -1,
                         "num_threads": 1}, lgb.Dataset(X, y), num_boost_round=args.trees)
    model = parse_model_text(booster.model_to_string().encode())
    evaluator = compile_lightgbm(model)
    print(f"{evaluator.name}, max depth {max(t.depth for t in model.trees)}, "
          f"max_rows {evaluator.max_rows}")
    print(f"{'rows':>5} {'fast path us':>13} {'Booster.predict us':>19} {'ratio':>6}")
    for n in BATCHES:
        batch = rng.normal(size=(n, args.features))
        fast = _per_call(lambda b=batch: evaluator.predict(b))
        ref = _per_call(lambda b=batch: booster.predict(b, num_threads=1))
        print(f"{n:>5} {fast * 1e6:>13.1f} {ref * 1e6:>19.1f} {fast / ref:>6.2f}")


if __name__ == "__main__":
    main()
