"""LightGBM: its own text model file (never pickle), checked line by line before LightGBM
reads it (model_file.py); compiled trees for numerical splits (trees.py)."""

from serving_runtime.models.runtimes.plugin import ArtifactKind, Framework

FRAMEWORK = Framework(
    name="lightgbm",
    title="LightGBM",
    library="lightgbm",
    artifacts=(ArtifactKind(".txt", "model.txt"),),
    save_formats=("txt",),
    estimator_modules=("lightgbm",),
    runtime="serving_runtime.models.runtimes.lightgbm.runtime:LightGBMRuntime",
)
