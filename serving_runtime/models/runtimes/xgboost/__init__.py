"""XGBoost: its own JSON/UBJSON model files, checked byte by byte before XGBoost reads
them; compiled trees for gbtree models."""

from serving_runtime.models.runtimes.plugin import PICKLE_KINDS, ArtifactKind, Framework

FRAMEWORK = Framework(
    name="xgboost",
    title="XGBoost",
    library="xgboost",
    artifacts=(ArtifactKind(".json", "model.json"), ArtifactKind(".ubj", "model.ubj"),
               *PICKLE_KINDS),
    save_formats=("json", "ubj"),
    estimator_modules=("xgboost",),
    runtime="serving_runtime.models.runtimes.xgboost.runtime:XGBoostRuntime",
)
