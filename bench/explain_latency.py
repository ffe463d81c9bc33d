"""Cost of an explanation (exact TreeSHAP) per model kind, in-process: one row, and per row
of a 1,000-row batch, beside the prediction of the same rows.

    .venv/bin/python bench/explain_latency.py
    .venv/bin/python bench/explain_latency.py --repeat 50

Models: 10 features, 2,000 training rows (make_classification / make_regression, seed 0),
saved with save_model and loaded with load_model (what the server explains, fast path on).
"one row" is the median of `--repeat` calls of `LoadedModel.explain` on one row; "per row
at 1,000" is one 1,000-row call divided by 1,000 (median of 3). The shap columns time
shap.TreeExplainer (its C++ TreeSHAP; a test dependency, not the runtime's) on the same
estimator and rows, for scale.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving_runtime import save_model  # noqa: E402
from serving_runtime.models.folder import load_model  # noqa: E402


def models() -> dict[str, tuple[object, str]]:
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn import ensemble

    return {
        "sklearn RandomForestClassifier (10 trees)":
            (ensemble.RandomForestClassifier(n_estimators=10, random_state=0), "clf"),
        "sklearn RandomForestRegressor (10 trees)":
            (ensemble.RandomForestRegressor(n_estimators=10, random_state=0), "reg"),
        "sklearn GradientBoostingClassifier (100 x depth 3)":
            (ensemble.GradientBoostingClassifier(random_state=0), "clf"),
        "XGBoost XGBClassifier (100 x depth 6)":
            (xgb.XGBClassifier(n_estimators=100, max_depth=6), "clf"),
        "LightGBM LGBMClassifier (100 x 31 leaves)":
            (lgb.LGBMClassifier(n_estimators=100, verbose=-1), "clf"),
    }


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    from sklearn.datasets import make_classification, make_regression

    Xc, yc = make_classification(n_samples=2000, n_features=10, random_state=0)
    Xr, yr = make_regression(n_samples=2000, n_features=10, random_state=0)
    work = Path(tempfile.mkdtemp(prefix="n1v1-explain-bench-"))
    import warnings

    import shap

    warnings.filterwarnings("ignore", category=UserWarning)  # shap's LightGBM output notice

    print("| model | explain 1 row, ms | explain per row at 1,000, ms | predict 1 row, ms "
          "| shap 1 row, ms | shap per row at 1,000, ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, (title, (est, kind)) in enumerate(models().items()):
        X, y = (Xc, yc) if kind == "clf" else (Xr, yr)
        model = load_model(save_model(est.fit(X, y), work / f"m{i}", version="1",
                                      sample=X[:5]))
        one, batch = X[:1], X[:1000]
        model.explain(one)  # builds the explainer (sklearn: the trees' paths) once
        e1 = statistics.median(timed(model.explain, one) for _ in range(args.repeat))
        eb = statistics.median(timed(model.explain, batch) for _ in range(3)) / len(batch)
        p1 = statistics.median(timed(model.predict, one) for _ in range(args.repeat))
        ref = shap.TreeExplainer(est)

        def reference(rows: object, ref: object = ref) -> object:
            return ref.shap_values(rows, check_additivity=False)  # type: ignore[attr-defined]

        reference(one)
        s1 = statistics.median(timed(reference, one) for _ in range(args.repeat))
        sb = statistics.median(timed(reference, batch) for _ in range(3)) / len(batch)
        print(f"| {title} | {e1 * 1e3:.2f} | {eb * 1e3:.3f} | {p1 * 1e3:.3f} "
              f"| {s1 * 1e3:.2f} | {sb * 1e3:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
