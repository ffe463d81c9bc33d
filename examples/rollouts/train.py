"""A champion and a challenger of one iris model (docs/rollouts.md): the challenger's
folder is models/.challengers/iris, next to models/iris."""

import sys
from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from serving_runtime import save_model
from serving_runtime.models.folder_format import challenger_folder

models = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
iris = load_iris()
names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
champion = RandomForestClassifier(n_estimators=20, random_state=0).fit(iris.data, iris.target)
# a smaller, shallower forest: it disagrees on a few rows
challenger = RandomForestClassifier(n_estimators=5, max_depth=2, random_state=1).fit(
    iris.data, iris.target)
print(save_model(champion, models / "iris", version="1.0.0", feature_names=names,
                 sample=iris.data[::50]))
print(save_model(challenger, challenger_folder(models, "iris"), version="1.1.0",
                 feature_names=names, sample=iris.data[::50]))
