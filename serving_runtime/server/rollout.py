"""A served model's challenger: the canary split, the shadow queue and the runtime's own
rollback (docs/rollouts.md).

A model may have one challenger, loaded from `MODELS_DIR/.challengers/<name>/` beside the
champion and configured by the CHALLENGERS setting:

- canary: a share of requests (`weight` percent) is answered by the challenger. The split
  is a hash of the request's correlation id, so the same id always meets the same version;
  the X-Model-Version header pins a version. A challenger that fails a request the
  champion answers is never the caller's problem: the champion answers instead, and the
  failure counts against the challenger's limits.
- shadow: every request is answered by the champion; its rows and the champion's outputs
  are queued, and the event loop evaluates the challenger on them afterwards, in batches
  between requests, and counts where the two disagree. The queue and the time the shadow
  may take are bounded: under load rows are dropped (and counted), never waited for.

The challenger is rolled back inside the pod — routing stops at once — when it fails to load
(or its golden sample), or its error rate or p95 latency passes the configured limits after
`min_requests` answers. /health reports the state and the reason; the operator reads it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving_runtime.models.folder import LoadedModel
from serving_runtime.models.folder_format import model_name_problem

log = logging.getLogger("serving_runtime.server.rollout")

#: resolution of the canary split: a weight is honoured to 0.01 %
SPLIT_BUCKETS = 10_000
#: challenger answers kept for its p95 (the limit is checked over the latest ones)
LATENCY_WINDOW = 1000
#: limits are re-checked every this many challenger answers (a p95 sorts the window)
CHECK_EVERY = 20
#: rows the shadow evaluates per event-loop callback (~1 ms of a 100-tree model: a request
#: that arrives meanwhile waits no longer), and how long they gather first
SHADOW_BATCH_ROWS = 64
SHADOW_COLLECT_SECONDS = 0.02
#: the most the shadow's budget saves up while idle (seconds of evaluation): a burst after
#: a quiet spell is evaluated whole
SHADOW_MAX_CREDIT_SECONDS = 0.25
#: regression outputs that differ by more than this (relative to max(1, |champion|))
#: count as a disagreement; float noise between two builds of the same model does not
REGRESSION_TOLERANCE = 1e-6

Mode = Literal["canary", "shadow"]
#: challenger states in /health
LOADING, SERVING, FAILED, ROLLED_BACK = "loading", "serving", "failed", "rolled_back"


class ChallengerConfig(BaseModel):
    """One entry of CHALLENGERS (JSON object: model name -> this)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode
    weight: float = Field(default=0.0, ge=0, le=100,
                          description="canary: percent of requests the challenger answers")
    max_error_rate_percent: float | None = Field(default=None, ge=0, le=100)
    max_latency_p95_ms: float | None = Field(default=None, gt=0)
    min_requests: int = Field(default=100, ge=1,
                              description="challenger answers before the limits apply")

    @model_validator(mode="after")
    def _weight_for_canary(self) -> ChallengerConfig:
        if self.mode == "shadow" and (self.weight or self.max_error_rate_percent is not None
                                      or self.max_latency_p95_ms is not None):
            raise ValueError("a shadow answers no request: 'weight' and the limits apply to "
                             "canary only")
        return self


def parse_challengers(text: str) -> dict[str, ChallengerConfig]:
    """CHALLENGERS (a JSON object, or empty) -> configs; ValueError names what is wrong."""
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"CHALLENGERS is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(doc, dict):
        raise ValueError('CHALLENGERS must be a JSON object {"<model>": {"mode": ...}}')
    out: dict[str, ChallengerConfig] = {}
    for name, conf in doc.items():
        problem = model_name_problem(name)
        if problem is not None:
            raise ValueError(f"CHALLENGERS: {name!r} cannot name a model: {problem}")
        try:
            out[name] = ChallengerConfig.model_validate(conf)
        except ValidationError as exc:
            errs = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}"
                for e in exc.errors())
            raise ValueError(f"CHALLENGERS[{name!r}]: {errs}") from None
    return out


def split_bucket(key: str) -> int:
    """The request's place in the split, 0..SPLIT_BUCKETS-1, the same for the same key in
    every pod and every process (blake2b, not Python's per-process salted hash)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SPLIT_BUCKETS


def compatibility_problem(champion: LoadedModel, challenger: LoadedModel,
                          mode: str = "shadow") -> str | None:
    """Why `challenger` cannot stand in for `champion` on the same requests, or None. A
    canary also needs the champion's feature order: V2 tensors are positional."""
    if challenger.version == champion.version:
        return f"it has the champion's version {champion.version!r}: give it its own"
    if challenger.task != champion.task:
        return f"its task is {challenger.task}, the champion's {champion.task}"
    if set(challenger.feature_names) != set(champion.feature_names):
        missing = sorted(set(champion.feature_names) - set(challenger.feature_names))
        extra = sorted(set(challenger.feature_names) - set(champion.feature_names))
        return (f"its features differ from the champion's (missing: {missing or 'none'}, "
                f"extra: {extra or 'none'}); requests carry the champion's features")
    if mode == "canary" and challenger.feature_names != champion.feature_names:
        return ("its features are in another order than the champion's; V2 tensors are "
                "positional, so a canary must take them in the champion's order")
    return None


class Challenger:
    """The mutable state of one model's challenger (one per process)."""

    __slots__ = ("_latencies", "_since_check", "config", "errors", "model", "name",
                 "reason", "requests", "state", "threshold", "version")

    def __init__(self, name: str, config: ChallengerConfig) -> None:
        self.name = name
        self.config = config
        self.model: LoadedModel | None = None
        self.version: str | None = None
        self.state = LOADING
        self.reason: str | None = None
        self.threshold = round(config.weight * SPLIT_BUCKETS / 100)
        self.requests = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._since_check = 0

    @property
    def mode(self) -> Mode:
        return self.config.mode

    def loaded(self, model: LoadedModel) -> None:
        self.model, self.version = model, model.version
        self.state, self.reason = SERVING, None
        self.requests = self.errors = self._since_check = 0
        self._latencies.clear()

    def failed(self, reason: str) -> None:
        self.model, self.version, self.state, self.reason = None, None, FAILED, reason

    def takes(self, key: str) -> bool:
        """Whether the canary answers the request keyed `key` (its correlation id)."""
        return self.state == SERVING and split_bucket(key) < self.threshold

    def observe(self, ok: bool, seconds: float) -> str | None:
        """Count one challenger answer; the rollback kind (error_rate | latency) if the
        limits trip now. Answers in flight when it was rolled back are not counted."""
        if self.state != SERVING:
            return None
        self.requests += 1
        if ok:
            self._latencies.append(seconds)
        else:
            self.errors += 1
        self._since_check += 1
        if self._since_check < CHECK_EVERY or self.requests < self.config.min_requests:
            return None
        self._since_check = 0
        over = self.over_limits()
        if over is None:
            return None
        self.roll_back(*over)
        return over[0]

    def over_limits(self) -> tuple[str, str] | None:
        """(kind, reason) when the challenger's answers so far pass a limit."""
        c = self.config
        if c.max_error_rate_percent is not None:
            rate = 100.0 * self.errors / self.requests
            if rate > c.max_error_rate_percent:
                return "error_rate", (
                    f"error rate {rate:.1f}% over {self.requests} answers is above the "
                    f"limit of {c.max_error_rate_percent:g}%")
        p95 = self.p95_seconds()
        if (c.max_latency_p95_ms is not None and p95 is not None
                and len(self._latencies) >= min(c.min_requests, LATENCY_WINDOW)
                and p95 * 1000 > c.max_latency_p95_ms):
            return "latency", (
                f"p95 latency {p95 * 1000:.1f} ms over its latest {len(self._latencies)} "
                f"answers is above the limit of {c.max_latency_p95_ms:g} ms")
        return None

    def p95_seconds(self) -> float | None:
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def roll_back(self, kind: str, reason: str) -> None:
        self.state, self.reason = ROLLED_BACK, reason
        self.model = None  # nothing routes to it any more; its memory goes
        log.error("challenger rolled back", extra={
            "model_name": self.name, "version": self.version, "mode": self.mode,
            "kind": kind, "reason": reason})

    def status(self) -> dict[str, Any]:
        """The /health view."""
        p95 = self.p95_seconds()
        return {
            "mode": self.mode,
            "version": self.version,
            "state": self.state,
            "weight": self.config.weight if self.mode == "canary" else None,
            "reason": self.reason,
            "requests": self.requests,
            "errors": self.errors,
            "p95_ms": round(p95 * 1000, 3) if p95 is not None else None,
        }


# --- shadow comparison ---------------------------------------------------------------


def compare_outputs(
    task: str,
    champion: tuple[np.ndarray, np.ndarray | None],
    shadow: tuple[np.ndarray, np.ndarray | None],
    same_classes: bool,
) -> tuple[int, np.ndarray | None]:
    """(rows whose answer differs, per-row |Δ|) of two versions' outputs on the same rows.

    Classifiers: a row disagrees when the predicted labels differ; |Δ| is the largest
    difference of one class's probability (None without probabilities, or when the two
    have different classes). Regressors: |Δ| of the predictions; a row disagrees when
    |Δ| > REGRESSION_TOLERANCE x max(1, |champion|).
    """
    labels_a, proba_a = champion
    labels_b, proba_b = shadow
    if task == "regression":
        a = np.asarray(labels_a, dtype=np.float64)
        delta = np.abs(a - np.asarray(labels_b, dtype=np.float64))
        disagree = int(np.count_nonzero(delta > REGRESSION_TOLERANCE * np.maximum(1.0, np.abs(a))))
        return disagree, delta
    disagree = int(np.count_nonzero(np.asarray(labels_a) != np.asarray(labels_b)))
    if proba_a is None or proba_b is None or not same_classes or proba_a.shape != proba_b.shape:
        return disagree, None
    return disagree, np.abs(proba_a - proba_b).max(axis=1)


#: one request's rows waiting for the shadow: (challenger, champion, rows, the champion's
#: outputs on them and its model call's seconds — or None: predict the champion again)
ShadowItem = tuple[Challenger, LoadedModel, np.ndarray,
                   tuple[np.ndarray, np.ndarray | None] | None, float]
#: what the drain reports per evaluated batch: (champion, rows, disagreements, deltas,
#: champion seconds, shadow seconds)
Report = Callable[..., None]


def _stack(parts: list[Any]) -> Any:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ShadowQueue:
    """Rows waiting for their shadow evaluation, evaluated on the event loop between requests.

    `offer` is called after the answer is built: it appends or, when `capacity_rows` are
    already waiting, drops the rows (counted); it never blocks. A drain runs
    SHADOW_COLLECT_SECONDS after the first waiting row and evaluates up to
    SHADOW_BATCH_ROWS rows per loop callback (then yields to the requests that came
    meanwhile). Not a thread: measured here, a second Python thread beside the event loop
    cost each request ~20 us of GIL traffic even with every row dropped, more than the
    shadow's trees cost.

    The shadow keeps to a time budget: `budget` (a fraction of the process's time, saved up
    to SHADOW_MAX_CREDIT_SECONDS while idle). Beyond it, under load that saturates the
    process, batches are dropped and counted instead of taking time from the answers: the
    disagreement metrics then describe the rows evaluated, `shadow_rows_total` says how many.
    """

    def __init__(self, capacity_rows: int, on_batch: Report, on_drop: Callable[[str, int], None],
                 on_failure: Callable[[str, int, BaseException], None], *,
                 collect_seconds: float = SHADOW_COLLECT_SECONDS,
                 budget: float = 0.05) -> None:
        self.capacity_rows = capacity_rows
        self.collect_seconds = collect_seconds
        self.budget = budget
        self._credit = SHADOW_MAX_CREDIT_SECONDS
        self._credit_at = time.perf_counter()
        self._on_batch, self._on_drop, self._on_failure = on_batch, on_drop, on_failure
        self._items: deque[ShadowItem] = deque()
        self._rows = 0
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._closed = False

    def offer(self, challenger: Challenger, champion: LoadedModel, X: np.ndarray,
              outputs: tuple[np.ndarray, np.ndarray | None] | None = None,
              champion_seconds: float = 0.0) -> bool:
        n = X.shape[0]
        if self._closed or self._rows + n > self.capacity_rows:
            self._on_drop(challenger.name, n)
            return False
        if n <= SHADOW_BATCH_ROWS:
            self._items.append((challenger, champion, X, outputs, champion_seconds))
        else:  # in callback-sized pieces (views, no copies): no drain holds the loop long
            for i in range(0, n, SHADOW_BATCH_ROWS):
                part = slice(i, i + SHADOW_BATCH_ROWS)
                out = None if outputs is None else (
                    outputs[0][part], None if outputs[1] is None else outputs[1][part])
                share = champion_seconds * (min(n, i + SHADOW_BATCH_ROWS) - i) / n
                self._items.append((challenger, champion, X[part], out, share))
        self._rows += n
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(
                self.collect_seconds, self._drain)
        return True

    def _drain(self) -> None:
        try:
            batch = self._take()
            if batch:
                self._evaluate(batch)
        except Exception:  # never leave the queue without a drain scheduled
            log.exception("shadow drain failed")
        finally:
            self._handle = (asyncio.get_running_loop().call_soon(self._drain)
                            if self._items and not self._closed else None)

    def _take(self) -> list[ShadowItem]:
        """Consecutive items of one (challenger, champion) pair, up to the batch size."""
        if not self._items:
            return []
        first = self._items.popleft()
        batch, rows = [first], first[2].shape[0]
        while (self._items and rows < SHADOW_BATCH_ROWS
               and self._items[0][0] is first[0] and self._items[0][1] is first[1]
               and (self._items[0][3] is None) == (first[3] is None)):
            item = self._items.popleft()
            batch.append(item)
            rows += item[2].shape[0]
        self._rows -= rows
        return batch

    def _evaluate(self, batch: list[ShadowItem]) -> None:
        challenger, champion = batch[0][0], batch[0][1]
        X = _stack([item[2] for item in batch])
        model = challenger.model
        now = time.perf_counter()
        self._credit = min(SHADOW_MAX_CREDIT_SECONDS,
                           self._credit + (now - self._credit_at) * self.budget)
        self._credit_at = now
        if model is None or self._credit <= 0:  # rolled back meanwhile, or over budget
            self._on_drop(challenger.name, X.shape[0])
            return
        try:
            self._compare(batch, challenger, champion, model, X)
        finally:
            self._credit -= time.perf_counter() - now

    def _compare(self, batch: list[ShadowItem], challenger: Challenger, champion: LoadedModel,
                 model: LoadedModel, X: np.ndarray) -> None:
        try:
            if batch[0][3] is None:  # /predict/batch rows: predict the champion here
                t0 = time.perf_counter()
                ours = (getattr(champion.runtime, "predict_compiled", None) or champion.predict)(X)
                champion_s = time.perf_counter() - t0
            else:
                probas = [item[3][1] for item in batch if item[3] is not None]
                ours = (_stack([item[3][0] for item in batch if item[3] is not None]),
                        _stack(probas) if all(p is not None for p in probas) else None)
                champion_s = sum(item[4] for item in batch)
            # the rows are in the champion's feature order; the challenger may order them otherwise
            if model.feature_names != champion.feature_names:
                X = X[:, [champion.feature_index[f] for f in model.feature_names]]
            t1 = time.perf_counter()
            # the compiled evaluator when the shadow has one (accelerate.py: predict_compiled)
            predict = getattr(model.runtime, "predict_compiled", None) or model.predict
            theirs = predict(X)
            shadow_s = time.perf_counter() - t1
            disagree, delta = compare_outputs(champion.task, ours, theirs,
                                              model.classes == champion.classes)
        except Exception as exc:  # a shadow's failure never reaches a caller
            self._on_failure(challenger.name, X.shape[0], exc)
            return
        self._on_batch(champion, X.shape[0], disagree, delta, champion_s, shadow_s)

    def close(self) -> int:
        """Stop draining; the rows still waiting are returned as a count (dropped)."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        waiting, self._rows = self._rows, 0
        self._items.clear()
        return waiting
