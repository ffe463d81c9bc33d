"""scikit-learn models, stored with skops (no pickle) and loaded with an explicit list
of trusted types."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from serving_runtime.errors import ModelLoadError, UnsafeArtifactError
from serving_runtime.models.runtimes.base import (
    Explanation,
    ModelRuntime,
    Task,
    check_format,
    unsupported_artifact,
)
from serving_runtime.models.runtimes.native_errors import ModelFileError, clean_native_error
from serving_runtime.models.runtimes.pickle_artifact import UNSAFE_HOWTO, is_pickle, load_pickle
from serving_runtime.models.runtimes.sklearn import FRAMEWORK
from serving_runtime.models.runtimes.sklearn.check import check_sklearn_trees, skops_unpacked_size

if TYPE_CHECKING:
    from serving_runtime.models.trees.evaluator import Evaluator

# Types skops does not trust by itself but that plain fitted scikit-learn estimators
# contain (tree structures, neighbour indexes, optimiser state). Anything else a file
# asks for is refused by name: we do not pass skops' "trust everything" switch.
TRUSTED_SKOPS_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.MultinomialLogit",
)

# Final estimators whose predict() is by construction classes_[argmax(predict_proba)],
# so one predict_proba call gives both outputs (half the cost of calling both).
_ARGMAX_CONSISTENT = (
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
)


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


class SklearnRuntime(ModelRuntime):
    framework: ClassVar[str] = FRAMEWORK.name

    def __init__(self, estimator: Any) -> None:
        from sklearn.base import is_classifier, is_regressor

        if not hasattr(estimator, "predict"):
            raise ModelLoadError(f"{type(estimator).__name__} has no predict method")
        self.estimator = estimator
        self._explainer: Any = None
        if is_classifier(estimator):
            self.task: Task = "classification"
        elif is_regressor(estimator):
            self.task = "regression"
        else:
            raise ModelLoadError(
                f"{type(estimator).__name__} is neither a classifier nor a regressor"
            )
        n = getattr(estimator, "n_features_in_", None)
        if n is None:
            raise ModelLoadError(f"{type(estimator).__name__} is not fitted (no n_features_in_)")
        self.n_features = int(n)
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_names = tuple(str(x) for x in names) if names is not None else None
        classes = getattr(estimator, "classes_", None) if self.task == "classification" else None
        self.classes = tuple(np.asarray(classes).tolist()) if classes is not None else None
        self.has_proba = self.task == "classification" and hasattr(estimator, "predict_proba")
        self._classes_arr = np.asarray(classes) if classes is not None else None
        self._argmax_ok = self.has_proba and type(_final_step(estimator)).__name__ in (
            _ARGMAX_CONSISTENT
        )
        if names is not None:
            # Fitted on a DataFrame: it warns on every ndarray, but the columns we pass
            # are already in its own feature order, so the warning says nothing here.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")

    @classmethod
    def load(
        cls, artifact: Path, *, allow_unsafe: bool, threads: int | None = None,
        data: bytes | None = None, max_bytes: int | None = None,
    ) -> SklearnRuntime:
        suffix = artifact.suffix.lower()
        if suffix == ".skops":
            estimator = _load_skops(artifact, allow_unsafe=allow_unsafe,
                                    data=artifact.read_bytes() if data is None else data,
                                    max_bytes=max_bytes)
        elif is_pickle(suffix):
            estimator = load_pickle(artifact, allow_unsafe=allow_unsafe, data=data)
        else:
            raise unsupported_artifact(FRAMEWORK.title, artifact.name,
                                       FRAMEWORK.describe_suffixes())
        try:  # before anything predicts: a tampered tree crashes the native code
            check_sklearn_trees(estimator)
        except ModelFileError as exc:
            raise ModelLoadError(f"{artifact.name}: {exc}; refused (a corrupt or tampered "
                                 f"tree)") from None
        return cls(estimator)

    @classmethod
    def from_estimator(cls, estimator: Any, *, threads: int | None = None) -> SklearnRuntime:
        return cls(estimator)

    @classmethod
    def owns(cls, estimator: Any) -> bool:
        from sklearn.base import BaseEstimator

        return isinstance(estimator, BaseEstimator)

    @classmethod
    def artifact_of(cls, estimator: Any, artifact_format: str | None) -> tuple[str, bytes]:
        check_format(FRAMEWORK.title, artifact_format, FRAMEWORK.save_formats)
        import skops.io as sio

        return "model.skops", sio.dumps(estimator)

    def source_model(self) -> Any:
        return self.estimator

    def compile_fast_path(self) -> Evaluator | None:
        from serving_runtime.models.runtimes.sklearn.trees import compile_sklearn

        return compile_sklearn(self.estimator)

    def single_threaded(self) -> None:
        est = self.estimator  # forests: no joblib threads per call
        if getattr(est, "n_jobs", None) not in (None, 1) and hasattr(est, "set_params"):
            est.set_params(n_jobs=None)

    def explain(self, X: np.ndarray) -> Explanation:
        # built on first use (the trees' path structure): a model never explained pays none
        if self._explainer is None:
            from serving_runtime.models.runtimes.sklearn.explain import SklearnExplainer

            self._explainer = SklearnExplainer(self.estimator)
        return self._explainer.explain(X)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.has_proba:
            return np.asarray(self.estimator.predict(X)), None
        proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        if self._argmax_ok and self._classes_arr is not None:
            return self._classes_arr.take(np.argmax(proba, axis=1)), proba
        return np.asarray(self.estimator.predict(X)), proba


def _load_skops(artifact: Path, *, allow_unsafe: bool, data: bytes,
                max_bytes: int | None) -> Any:
    import skops.io as sio

    try:
        unpacked = skops_unpacked_size(data)
    except (zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as exc:
        raise ModelLoadError(f"{artifact.name} is not a readable skops file (a zip): "
                             f"{clean_native_error(str(exc))}") from None
    if max_bytes is not None and unpacked > max_bytes:
        raise ModelLoadError(
            f"{artifact.name} would unpack to {unpacked} bytes (uncompressed), over "
            f"MAX_ARTIFACT_BYTES ({max_bytes}); refused before unpacking")
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelLoadError(f"{artifact.name} is not a readable skops file: "
                             f"{clean_native_error(str(exc))}") from exc
    unknown = [t for t in untrusted if t not in TRUSTED_SKOPS_TYPES]
    if unknown and not allow_unsafe:
        raise UnsafeArtifactError(
            f"{artifact.name} contains types outside the trusted list: {', '.join(unknown)}; "
            f"{UNSAFE_HOWTO}"
        )
    try:
        return sio.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise ModelLoadError(f"could not load {artifact.name} with skops: "
                             f"{clean_native_error(str(exc))}") from exc
