"""XGBoost models in XGBoost's own JSON/UBJSON format, predicted with the Booster's
`inplace_predict` (no DMatrix, no sklearn-wrapper overhead), reproducing what
XGBClassifier/XGBRegressor.predict and predict_proba return."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from serving_runtime.errors import ModelLoadError
from serving_runtime.models.runtimes.base import (
    Explanation,
    ModelRuntime,
    Task,
    check_format,
    unsupported_artifact,
)
from serving_runtime.models.runtimes.native_errors import ModelFileError, clean_native_error
from serving_runtime.models.runtimes.pickle_artifact import is_pickle, load_pickle
from serving_runtime.models.runtimes.xgboost import FRAMEWORK
from serving_runtime.models.runtimes.xgboost.check import checked_model_bytes
from serving_runtime.models.runtimes.xgboost.direct import direct_predictor

if TYPE_CHECKING:
    from serving_runtime.models.trees.evaluator import Evaluator

_CLASSIFICATION_OBJECTIVES = ("binary:logistic", "multi:softprob", "multi:softmax")
_REGRESSION_PREFIXES = ("reg:", "count:", "survival:", "rank:")


class XGBoostRuntime(ModelRuntime):
    framework: ClassVar[str] = FRAMEWORK.name

    def __init__(self, booster: Any, *, threads: int | None = None) -> None:
        self.booster = booster
        if threads:
            booster.set_param({"nthread": int(threads)})
        config = json.loads(booster.save_config())
        learner = config["learner"]
        self.objective: str = learner["objective"]["name"]
        num_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
        if self.objective in _CLASSIFICATION_OBJECTIVES:
            self.task: Task = "classification"
            k = num_class if num_class > 1 else 2
            self.classes = tuple(range(k))
            self.has_proba = self.objective != "multi:softmax"
        elif self.objective.startswith(_REGRESSION_PREFIXES):
            self.task = "regression"
            self.classes = None
            self.has_proba = False
        else:
            raise ModelLoadError(f"unsupported XGBoost objective {self.objective!r}")
        self.n_features = int(booster.num_features())
        names = booster.feature_names
        self.feature_names = tuple(names) if names else None
        # The sklearn wrapper predicts with the best iteration after early stopping.
        best = booster.attr("best_iteration")
        self._iteration_range = (0, int(best) + 1) if best is not None else (0, 0)
        # the same C call as inplace_predict without its per-call Python work (checked)
        self._direct = direct_predictor(booster, self._iteration_range, self.n_features)

    @classmethod
    def load(
        cls, artifact: Path, *, allow_unsafe: bool, threads: int | None = None,
        data: bytes | None = None, max_bytes: int | None = None,
    ) -> XGBoostRuntime:
        suffix = artifact.suffix.lower()
        if is_pickle(suffix):
            obj = load_pickle(artifact, allow_unsafe=allow_unsafe, data=data)
            return cls.from_estimator(obj, threads=threads)
        if suffix not in FRAMEWORK.safe_suffixes:
            raise unsupported_artifact(FRAMEWORK.title, artifact.name,
                                       FRAMEWORK.describe_suffixes())
        import xgboost as xgb

        try:  # XGBoost's own reader and predictor crash on a corrupt file: see check.py
            checked = checked_model_bytes(artifact.read_bytes() if data is None else data,
                                          suffix)
        except ModelFileError as exc:
            raise ModelLoadError(f"{artifact.name} is not a usable XGBoost model: "
                                 f"{exc}") from None
        booster = xgb.Booster()
        try:
            # the checked bytes themselves, not the path: the file may change meanwhile
            booster.load_model(bytearray(checked))
        except Exception as exc:
            raise ModelLoadError(f"could not load {artifact.name} with XGBoost: "
                                 f"{clean_native_error(str(exc))}") from exc
        return cls(booster, threads=threads)

    @classmethod
    def from_estimator(cls, estimator: Any, *, threads: int | None = None) -> XGBoostRuntime:
        import xgboost as xgb

        if isinstance(estimator, xgb.XGBModel):
            return cls(estimator.get_booster(), threads=threads)
        if isinstance(estimator, xgb.Booster):
            return cls(estimator, threads=threads)
        raise ModelLoadError(f"{type(estimator).__name__} is not an XGBoost model")

    @classmethod
    def owns(cls, estimator: Any) -> bool:
        import xgboost as xgb

        return isinstance(estimator, xgb.XGBModel | xgb.Booster)

    @classmethod
    def artifact_of(cls, estimator: Any, artifact_format: str | None) -> tuple[str, bytes]:
        fmt = check_format(FRAMEWORK.title, artifact_format, FRAMEWORK.save_formats)
        import xgboost as xgb

        booster = estimator if isinstance(estimator, xgb.Booster) else estimator.get_booster()
        # save_raw writes exactly what save_model writes to a file of that suffix
        return f"model.{fmt}", bytes(booster.save_raw(fmt))

    def source_model(self) -> Any:
        return self.booster

    def compile_fast_path(self) -> Evaluator | None:
        from serving_runtime.models.runtimes.xgboost.trees import compile_xgboost

        return compile_xgboost(self.booster, self._iteration_range)

    def single_threaded(self) -> None:
        self.booster.set_param({"nthread": 1})

    def explain(self, X: np.ndarray) -> Explanation:
        import xgboost as xgb

        # XGBoost's own exact TreeSHAP (what shap.TreeExplainer calls): margins
        out = np.asarray(self.booster.predict(
            xgb.DMatrix(X), pred_contribs=True, iteration_range=self._iteration_range,
            validate_features=False), dtype=np.float64)
        if out.ndim == 2:  # one output: (rows, features + 1)
            out = out[:, None, :]
        k = out.shape[1]
        classes = None if self.task == "regression" else ((1,) if k == 1 else tuple(range(k)))
        # the bias column is the same for every row
        return Explanation(np.moveaxis(out[:, :, :-1], 1, -1), out[0, :, -1].copy(),
                           "margin", classes)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self._direct(X) if self._direct is not None else None
        if out is None:
            out = np.asarray(self.booster.inplace_predict(
                X, iteration_range=self._iteration_range, validate_features=False
            ))
        if self.task == "regression":
            return out, None
        if self.objective == "multi:softmax":
            return out.astype(np.int64), None
        # binary:logistic gives P(class 1) only
        proba = np.column_stack((1.0 - out, out)) if out.ndim == 1 else out
        return np.argmax(proba, axis=1), proba.astype(np.float64, copy=False)
