"""LightGBM models in LightGBM's own text model file, predicted with its Booster,
reproducing what LGBMClassifier/LGBMRegressor.predict and predict_proba return.

The file is checked in Python (model_file.py) before LightGBM parses one byte of it, and
the Booster is built from exactly the checked text. The text format stores no class
labels: an LGBMClassifier's labels come from metadata.json's `classes` (`adopt_classes`),
which save_model writes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving_runtime.errors import ModelLoadError
from serving_runtime.models.runtimes.base import (
    MAX_FEATURES,
    Explanation,
    ModelRuntime,
    NotExplainable,
    Task,
    check_format,
    unsupported_artifact,
)
from serving_runtime.models.runtimes.lightgbm import FRAMEWORK
from serving_runtime.models.runtimes.lightgbm.model_file import LightGBMModel, parse_model_text
from serving_runtime.models.runtimes.native_errors import ModelFileError, clean_native_error
from serving_runtime.models.trees.evaluator import Evaluator, RowPredictions

_CLASSIFICATION = {"binary", "multiclass", "multiclassova"}
# objectives whose outputs are not predictions a caller can use as they are
_REFUSED = {"custom": "a custom objective: LightGBM predicts raw scores for it"}
# the names LightGBM gives columns trained without names: not worth reporting as names
_DEFAULT_NAME = re.compile(r"Column_\d+")


class LightGBMRuntime(ModelRuntime):
    framework: ClassVar[str] = FRAMEWORK.name

    def __init__(self, booster: Any, model: LightGBMModel, *, threads: int | None = None
                 ) -> None:
        self.booster = booster
        self.model = model
        objective = model.objective.name if model.objective is not None else "custom"
        if objective in _REFUSED:
            raise ModelLoadError(f"the LightGBM model was trained with {_REFUSED[objective]}")
        self.objective = objective
        if objective in _CLASSIFICATION:
            self.task: Task = "classification"
            k = model.num_class if model.num_class > 1 else 2
            self.classes: tuple[Any, ...] | None = tuple(range(k))
            self.has_proba = True
        else:
            self.task = "regression"
            self.classes = None
            self.has_proba = False
        self.n_features = model.max_feature_idx + 1
        names = model.feature_names
        unnamed = all(_DEFAULT_NAME.fullmatch(n) for n in names)
        self.feature_names = None if unnamed or len(names) != self.n_features else names
        self._labels: np.ndarray | None = None  # adopted class labels, else indexes
        self._threads = int(threads) if threads else 0  # 0: LightGBM's (OpenMP's) default

    @classmethod
    def load(
        cls, artifact: Path, *, allow_unsafe: bool, threads: int | None = None,
        data: bytes | None = None, max_bytes: int | None = None,
    ) -> LightGBMRuntime:
        if artifact.suffix.lower() not in FRAMEWORK.safe_suffixes:
            raise unsupported_artifact(FRAMEWORK.title, artifact.name,
                                       FRAMEWORK.describe_suffixes())
        raw = artifact.read_bytes() if data is None else data
        try:  # LightGBM's own parser trusts the file: see model_file.py
            model = parse_model_text(raw, max_features=MAX_FEATURES)
        except ModelFileError as exc:
            raise ModelLoadError(f"{artifact.name} is not a usable LightGBM model: "
                                 f"{exc}") from None
        return cls._from_checked(model, bytes(raw).decode("utf-8"), artifact.name, threads)

    @classmethod
    def _from_checked(cls, model: LightGBMModel, text: str, label: str,
                      threads: int | None) -> LightGBMRuntime:
        if model.pandas_categorical:  # "pandas_categorical:null" is every numpy-trained model
            raise ModelLoadError(
                f"{label}: the model was trained on pandas categorical columns, whose "
                f"category-to-code mapping requests cannot carry; train it on integer codes "
                f"(categorical_feature=[...] on a numeric matrix) to serve it")
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=text)  # the checked text itself, not the path
        except Exception as exc:
            raise ModelLoadError(f"could not load {label} with LightGBM: "
                                 f"{clean_native_error(str(exc))}") from None
        return cls(booster, model, threads=threads)

    @classmethod
    def from_estimator(cls, estimator: Any, *, threads: int | None = None) -> LightGBMRuntime:
        """The runtime of exactly what save_model writes: the Booster's model text (its best
        iteration after early stopping, as LGBMModel.predict uses), checked and reloaded."""
        import lightgbm as lgb

        if isinstance(estimator, lgb.LGBMModel):
            booster = estimator.booster_  # raises if not fitted
        elif isinstance(estimator, lgb.Booster):
            booster = estimator
        else:
            raise ModelLoadError(f"{type(estimator).__name__} is not a LightGBM model")
        text = booster.model_to_string()
        try:
            model = parse_model_text(text.encode("utf-8"), max_features=MAX_FEATURES)
        except ModelFileError as exc:
            raise ModelLoadError(f"LightGBM wrote a model this runtime cannot check: "
                                 f"{exc}") from None
        runtime = cls._from_checked(model, text, type(estimator).__name__, threads)
        wants = ("classification" if isinstance(estimator, lgb.LGBMClassifier) else
                 "regression" if isinstance(estimator, lgb.LGBMRegressor) else runtime.task)
        if wants != runtime.task:  # its own predict and the Booster's would differ
            raise ModelLoadError(
                f"{type(estimator).__name__} with objective {runtime.objective!r}: the "
                f"objective makes it a {runtime.task} model, so the served answers would not "
                f"be the estimator's own predict; use the estimator that fits the objective")
        labels = getattr(estimator, "classes_", None)
        if labels is not None and runtime.task == "classification":
            runtime.adopt_classes(np.asarray(labels).tolist())
        return runtime

    @classmethod
    def owns(cls, estimator: Any) -> bool:
        import lightgbm as lgb

        return isinstance(estimator, lgb.LGBMModel | lgb.Booster)

    @classmethod
    def artifact_of(cls, estimator: Any, artifact_format: str | None) -> tuple[str, bytes]:
        check_format(FRAMEWORK.title, artifact_format, FRAMEWORK.save_formats)
        import lightgbm as lgb

        booster = estimator.booster_ if isinstance(estimator, lgb.LGBMModel) else estimator
        # num_iteration=None: the best iteration when early stopping found one
        return "model.txt", booster.model_to_string().encode("utf-8")

    def adopt_classes(self, labels: list[Any]) -> None:
        if self.classes is None:
            return  # a regressor: the loader refuses metadata classes it cannot have
        if self._labels is not None or len(labels) != len(self.classes):
            if [str(c) for c in labels] == [str(c) for c in self.classes]:
                return
            raise ModelLoadError(f"metadata classes {labels} do not fit the model's "
                                 f"{len(self.classes)} classes")
        self._labels = np.asarray(labels)
        self.classes = tuple(labels)

    def source_model(self) -> Any:
        return self.booster

    def explain(self, X: np.ndarray) -> Explanation:
        # LightGBM's own exact TreeSHAP (what shap.TreeExplainer calls): raw scores
        try:
            out = np.asarray(self.booster.predict(X, pred_contrib=True,
                                                  num_threads=self._threads), dtype=np.float64)
        except Exception as exc:  # e.g. linear trees: LightGBM has no contributions for them
            raise NotExplainable(clean_native_error(str(exc))) from None
        k = out.shape[1] // (X.shape[1] + 1)
        out = out.reshape(len(X), k, X.shape[1] + 1)
        classes = None if self.task == "regression" else ((1,) if k == 1 else tuple(range(k)))
        return Explanation(np.moveaxis(out[:, :, :-1], 1, -1), out[0, :, -1].copy(),
                           "margin", classes)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = np.asarray(self.booster.predict(X, num_threads=self._threads))
        if self.task == "regression":
            return out, None
        # binary gives P(class 1) only; multiclass gives (rows, k)
        proba = np.column_stack((1.0 - out, out)) if out.ndim == 1 else out
        index = np.argmax(proba, axis=1)
        labels = index if self._labels is None else self._labels.take(index)
        return labels, proba.astype(np.float64, copy=False)

    def compile_fast_path(self) -> Evaluator | None:
        from serving_runtime.models.runtimes.lightgbm.trees import compile_lightgbm

        evaluator = compile_lightgbm(self.model)
        return evaluator if self._labels is None else _Relabelled(evaluator, self._labels)

    def single_threaded(self) -> None:
        self._threads = 1


class _Relabelled(Evaluator):
    """The compiled evaluator answering with adopted labels instead of class indexes."""

    def __init__(self, inner: Evaluator, labels: np.ndarray) -> None:
        self.inner = inner
        self.labels = labels
        self.name = inner.name
        self.n_features = inner.n_features
        self.is_classifier = inner.is_classifier
        self.max_rows = inner.max_rows

    def __getattr__(self, name: str) -> Any:
        # what verify() and callers read off the inner one (feature_scale, feature_center)
        return getattr(self.__dict__["inner"], name)

    def as_rows(self, X: np.ndarray) -> list[list[float]] | None:
        return self.inner.as_rows(X)

    def predict_rows(self, rows: list[list[float]]
                     ) -> tuple[RowPredictions, np.ndarray | None]:
        index, proba = self.inner.predict_rows(rows)
        return self.labels.take(np.asarray(index)), proba
