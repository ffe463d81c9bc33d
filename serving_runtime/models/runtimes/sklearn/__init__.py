"""scikit-learn: skops files loaded with an explicit list of trusted types, never pickle
unless unsafe loading is allowed; compiled trees for forests and gradient boosting."""

from serving_runtime.models.runtimes.plugin import PICKLE_KINDS, ArtifactKind, Framework

FRAMEWORK = Framework(
    name="sklearn",
    title="scikit-learn",
    library="sklearn",
    artifacts=(ArtifactKind(".skops", "model.skops"), *PICKLE_KINDS),
    save_formats=("skops",),
    estimator_modules=("sklearn",),
    runtime="serving_runtime.models.runtimes.sklearn.runtime:SklearnRuntime",
)
