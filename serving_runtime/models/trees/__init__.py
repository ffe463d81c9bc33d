"""Compiled tree evaluators: the fast path behind the model runtimes.

`compile_evaluator(model, framework)` returns an `Evaluator` (same `predict` contract as
`ModelRuntime.predict`) or None; `verify(evaluator, reference_predict)` compares it with
the framework's own answers. See README.md here for why generated Python code won.
"""

from serving_runtime.models.trees.codegen import NotCompilable
from serving_runtime.models.trees.evaluator import (
    PROBA_ATOL,
    Evaluator,
    MismatchReport,
    compile_evaluator,
    sample_rows,
    verify,
)

__all__ = [
    "PROBA_ATOL",
    "Evaluator",
    "MismatchReport",
    "NotCompilable",
    "compile_evaluator",
    "sample_rows",
    "verify",
]
