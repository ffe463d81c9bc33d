"""One model runtime per framework behind the `ModelRuntime` interface."""

from __future__ import annotations

from serving_runtime.errors import ModelLoadError
from serving_runtime.models.runtimes.base import ModelRuntime, Task
from serving_runtime.models.runtimes.sklearn_runtime import SklearnRuntime
from serving_runtime.models.runtimes.xgboost_runtime import XGBoostRuntime

RUNTIMES: dict[str, type[ModelRuntime]] = {
    SklearnRuntime.framework: SklearnRuntime,
    XGBoostRuntime.framework: XGBoostRuntime,
}


def runtime_class(framework: str) -> type[ModelRuntime]:
    try:
        return RUNTIMES[framework]
    except KeyError:
        raise ModelLoadError(
            f"unknown framework {framework!r}; supported: {', '.join(sorted(RUNTIMES))}"
        ) from None


__all__ = ["RUNTIMES", "ModelRuntime", "SklearnRuntime", "Task", "XGBoostRuntime", "runtime_class"]
