"""The model-runtime interface: one small class per framework, load + predict.

A runtime turns a float64 matrix (rows x features, already in the model's feature
order and validated) into labels/values and, for classifiers, probabilities. Anything
faster (a compiled tree evaluator) only has to implement the same two methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

Task = Literal["classification", "regression"]


class ModelRuntime(ABC):
    """Holds one deserialised model. Instances are immutable after `load`."""

    framework: ClassVar[str]
    #: artifact file extensions this runtime reads (without pickle)
    safe_extensions: ClassVar[tuple[str, ...]]

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
