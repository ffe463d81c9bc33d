"""Put a compiled evaluator in front of a loaded model runtime, after checking it.

`accelerate(runtime, model_name=...)` compiles the runtime's model, compares the compiled
evaluator with the runtime's own `predict` on random rows (the load-time self-check), and
returns an `AcceleratedRuntime` when they agree. When the model is unsupported or the check
fails, the reference runtime is returned unchanged (status "unsupported" / "fallback"),
with a log line saying why; the caller meters the status (`model_fast_path`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from serving_runtime.models.runtimes.base import Explanation, ModelRuntime
from serving_runtime.models.trees.codegen import NotCompilable
from serving_runtime.models.trees.evaluator import Evaluator, verify

log = logging.getLogger("serving_runtime.models.trees")

# Rows compared at load time: enough to exercise every leaf of a small forest, cheap
# enough (~50-400 ms) not to slow a reload noticeably. The server's default for
# FAST_PATH_CHECK_ROWS (the model library knows nothing of the server's settings).
CHECK_ROWS = 2000

FastPathState = Literal["active", "fallback", "unsupported", "disabled"]


@dataclass(frozen=True)
class FastPathStatus:
    state: FastPathState
    evaluator: str | None
    detail: str

    @property
    def active(self) -> bool:
        return self.state == "active"


class AcceleratedRuntime(ModelRuntime):
    """The reference runtime's interface; small requests go to the compiled evaluator,
    large ones (beyond `evaluator.max_rows`) to the framework's vectorised predict."""

    def __init__(self, reference: ModelRuntime, evaluator: Evaluator) -> None:
        self.reference = reference
        self.evaluator = evaluator
        self.framework = reference.framework  # type: ignore[misc]
        self.task = reference.task
        self.n_features = reference.n_features
        self.classes = reference.classes
        self.feature_names = reference.feature_names
        self.has_proba = reference.has_proba
        self._max_rows = evaluator.max_rows

    def explain(self, X: np.ndarray) -> Explanation:
        return self.reference.explain(X)  # the framework's trees, not the compiled code

    @classmethod
    def load(
        cls, artifact: Path, *, allow_unsafe: bool, threads: int | None = None,
        data: bytes | None = None, max_bytes: int | None = None,
    ) -> ModelRuntime:
        raise TypeError("load with the framework's runtime, then wrap it with accelerate()")

    @classmethod
    def from_estimator(cls, estimator: Any, *, threads: int | None = None) -> ModelRuntime:
        raise TypeError("wrap a framework runtime with accelerate()")

    @classmethod
    def owns(cls, estimator: Any) -> bool:
        return False

    @classmethod
    def artifact_of(cls, estimator: Any, artifact_format: str | None) -> tuple[str, bytes]:
        raise TypeError("save with the framework's runtime")

    def source_model(self) -> Any:
        return self.reference.source_model()

    def reference_outputs(self, estimator: Any, X: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.reference.reference_outputs(estimator, X)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if X.shape[0] <= self._max_rows:
            ev = self.evaluator
            rows = ev.as_rows(X)
            if rows is not None:
                pred, proba = ev.predict_rows(rows)
                return (np.asarray(pred),
                        None if proba is None else np.asarray(proba, dtype=np.float64))
        return self.reference.predict(X)

    def predict_compiled(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Every row through the compiled evaluator, in calls of up to `max_rows` rows (the
        shadow's path: on this machine a framework's native call, threads and all, cost the
        event loop beside it several times its own time; the compiled one costs its own)."""
        n = self._max_rows
        if X.shape[0] <= n:
            return self.predict(X)
        parts = [self.predict(X[i:i + n]) for i in range(0, X.shape[0], n)]
        pred = np.concatenate([p[0] for p in parts])
        probas = [p[1] for p in parts]
        if any(p is None for p in probas):
            return pred, None
        return pred, np.concatenate(probas)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # framework-specific attributes (estimator, booster, objective) of the reference
        return getattr(self.__dict__["reference"], name)


def accelerate(runtime: ModelRuntime, *, model_name: str, check_rows: int = CHECK_ROWS,
               enabled: bool = True) -> tuple[ModelRuntime, FastPathStatus]:
    """(runtime to serve with, status). Never raises for a model problem: any failure to
    compile or to agree means the reference runtime serves. `enabled=False` (FAST_PATH=false,
    an escape hatch when debugging a suspected fast-path problem) serves the reference."""
    try:
        runtime.single_threaded()
    except Exception as exc:  # never a reason to refuse a model
        log.info("could not set single-threaded prediction", extra={"error": str(exc)})
    if not enabled:
        return runtime, FastPathStatus("disabled", None, "fast path turned off (FAST_PATH)")
    try:
        evaluator = runtime.compile_fast_path()
    except NotCompilable as exc:
        log.info("fast path not available for this model; serving with the reference path",
                 extra={"model_name": model_name, "reason": str(exc)})
        return runtime, FastPathStatus("unsupported", None, str(exc))
    except Exception as exc:  # a converter bug must not stop the model from serving
        log.warning("fast path compile failed; serving with the reference path",
                    extra={"model_name": model_name, "error": f"{type(exc).__name__}: {exc}"})
        return runtime, FastPathStatus("fallback", None, f"compile failed: {exc}")
    if evaluator is None:
        log.info("fast path not available for this model; serving with the reference path",
                 extra={"model_name": model_name})
        return runtime, FastPathStatus("unsupported", None,
                                       f"no fast path for {runtime.framework} models")
    report = verify(evaluator, runtime.predict, n_rows=check_rows, seed=0)
    if not report.ok:
        log.warning("fast path disagrees with the framework's own predict; serving with the "
                    "reference path", extra={"model_name": model_name,
                                             "evaluator": evaluator.name, "check": str(report)})
        return runtime, FastPathStatus("fallback", evaluator.name, str(report))
    log.info("fast path enabled", extra={"model_name": model_name, "evaluator": evaluator.name,
                                         "check": str(report),
                                         "check_ms": round(report.seconds * 1000, 1)})
    return AcceleratedRuntime(runtime, evaluator), FastPathStatus(
        "active", evaluator.name, str(report))
