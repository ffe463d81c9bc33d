"""The model-runtime interface: everything a framework plug-in does with numbers.

A runtime turns a float64 matrix (rows x features, already in the model's feature
order and validated) into labels/values and, for classifiers, probabilities. Anything
faster (a compiled tree evaluator) only has to implement the same `predict`. Besides
loading and predicting, a runtime class recognises its framework's fitted models
(`owns`), writes them as an artifact (`artifact_of`), reads a source file for
`save --from` (`read_source`) and offers its compiled fast path (`compile_fast_path`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from serving_runtime.errors import ModelLoadError

if TYPE_CHECKING:
    from serving_runtime.models.trees.evaluator import Evaluator

Task = Literal["classification", "regression"]
#: what an explanation's contributions add up to (docs/explanations.md)
ExplainedOutput = Literal["probability", "value", "margin"]


class NotExplainable(Exception):
    """The model has no trees to explain (the reason is the message)."""


@dataclass(frozen=True)
class Explanation:
    """Exact TreeSHAP of some rows: `base[k] + contributions[r, :, k].sum()` is output `k`
    of row `r`, in the space `output` names: a forest's probability or value, a boosted
    model's margin (log-odds of the positive class for a binary classifier, the softmax's
    inputs for a multi-class one, the prediction before the objective's link for a
    regressor)."""

    contributions: np.ndarray  # (rows, n_features, n_outputs)
    base: np.ndarray  # (n_outputs,)
    output: ExplainedOutput
    #: the class (index into `classes`) each output column explains; None: one value
    classes: tuple[int, ...] | None

#: widest model accepted (the load-time checks build rows x features matrices)
MAX_FEATURES = 65_536


class ModelRuntime(ABC):
    """Holds one deserialised model. Instances are immutable after `load`."""

    #: the plug-in's Framework.name
    framework: ClassVar[str]

    task: Task
    n_features: int
    #: class labels in probability-column order (classifiers), else None
    classes: tuple[Any, ...] | None
    #: feature names the artifact itself records, if any
    feature_names: tuple[str, ...] | None
    has_proba: bool

    @classmethod
    @abstractmethod
    def load(
        cls, artifact: Path, *, allow_unsafe: bool, threads: int | None = None,
        data: bytes | None = None, max_bytes: int | None = None,
    ) -> ModelRuntime:
        """Deserialise `artifact`: from `data`, its bytes as the caller read and checked
        them (model_folder: inside the folder, a regular file, within the size limit), else
        from the file. `max_bytes` bounds what a compressed artifact may unpack to.
        Raises ModelLoadError / UnsafeArtifactError."""

    @classmethod
    @abstractmethod
    def from_estimator(cls, estimator: Any, *, threads: int | None = None) -> ModelRuntime:
        """Wrap an in-memory fitted estimator (used by save_model and pickle loading)."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (predictions[rows], probabilities[rows, n_classes] or None).

        Must equal the framework's own predict / predict_proba on the same rows."""

    def explain(self, X: np.ndarray) -> Explanation:
        """Exact TreeSHAP contributions of each feature for each row (path-dependent, as
        shap.TreeExplainer). Raises NotExplainable for a model without trees."""
        raise NotExplainable(f"{self.framework} {type(self).__name__} has no tree explainer")

    # --- what save_model and `save --from` need ------------------------------------------

    @classmethod
    @abstractmethod
    def owns(cls, estimator: Any) -> bool:
        """Whether `estimator` is a fitted model of this framework (an isinstance test)."""

    @classmethod
    @abstractmethod
    def artifact_of(cls, estimator: Any, artifact_format: str | None) -> tuple[str, bytes]:
        """(stored file name, bytes) of `estimator` in one of the plug-in's save_formats
        (None: the first); ValueError names the accepted formats."""

    @classmethod
    def read_source(cls, path: Path) -> Any:
        """The fitted model in a safe source file for `save --from` (`save` unpickles a
        trusted pickle itself): the file is checked and loaded like any artifact."""
        return cls.load(path, allow_unsafe=False).source_model()

    def adopt_classes(self, labels: list[Any]) -> None:
        """metadata.json's `classes`, for a format that stores only class indexes: such a
        runtime predicts these labels from now on. Default: the artifact names its classes
        itself, and the loader checks that metadata agrees."""
        return None

    def source_model(self) -> Any:
        """The framework object this runtime predicts with (estimator, Booster)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its model")

    def reference_outputs(self, estimator: Any, X: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray | None]:
        """The framework's own predict (and predict_proba) on `X`, for sample.json's golden
        answers: the estimator's, not this runtime's, so a runtime bug cannot agree with
        itself. A native Booster (no scikit-learn API: no get_params) predicts margins or
        wants its own matrix type, so the runtime's predict stands in for it."""
        if not hasattr(estimator, "get_params"):
            return self.predict(X)
        pred = np.asarray(estimator.predict(X))
        proba = None
        if self.has_proba and hasattr(estimator, "predict_proba"):
            proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
        return pred, proba

    # --- the fast path -------------------------------------------------------------------

    def compile_fast_path(self) -> Evaluator | None:
        """A compiled evaluator equal to `predict` (serving_runtime.models.trees), or None
        when the framework has none; raises NotCompilable (with the reason) for a model it
        cannot compile. Checked against `predict` by the caller before it serves."""
        return None

    def single_threaded(self) -> None:
        """Make one predict call use one thread: parallelism comes from one worker process
        per core (--workers). Measured here (2 CPUs, shared): XGBoost inplace_predict on 64
        rows takes ~0.6 ms with nthread=1 and ~10 ms with nthread=2 (OpenMP threads
        competing with the event loop and other processes); even 10,000 rows were faster
        on one thread. Default: nothing to change."""
        return None


def check_format(framework: str, artifact_format: str | None,
                 formats: tuple[str, ...]) -> str:
    """`artifact_format` if this framework writes it (None: its default), else ValueError."""
    fmt = artifact_format or formats[0]
    if fmt not in formats:
        raise ValueError(f"{framework} models are saved as {' or '.join(map(repr, formats))}, "
                         f"not {artifact_format!r}")
    return fmt


def unsupported_artifact(framework: str, name: str, accepted: str) -> ModelLoadError:
    return ModelLoadError(f"unsupported {framework} artifact {name}: expected {accepted}")
