"""Compiled tree evaluators: the fast path behind the model runtimes.

Each framework plug-in compiles its own models (`ModelRuntime.compile_fast_path`, e.g.
serving_runtime/models/runtimes/xgboost/trees.py) into an `Evaluator` (same `predict`
contract as `ModelRuntime.predict`) from the shared code generator here;
`verify(evaluator, reference_predict)` compares it with the framework's own answers.
See README.md here for why generated Python code won.
"""

from serving_runtime.models.trees.codegen import NotCompilable
from serving_runtime.models.trees.evaluator import (
    PROBA_ATOL,
    Evaluator,
    MismatchReport,
    sample_rows,
    verify,
)

__all__ = [
    "PROBA_ATOL",
    "Evaluator",
    "MismatchReport",
    "NotCompilable",
    "sample_rows",
    "verify",
]
