"""The framework registry: one plug-in package per framework, found by looking.

Every sub-package here whose `__init__.py` defines `FRAMEWORK` (a `plugin.Framework`) is a
framework; nothing else names them. Importing this registry imports no numpy and no
framework (fetch relies on it); `runtime_class` imports a framework's runtime on first use.
Adding a framework: docs/architecture.md, "Adding a framework".
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from serving_runtime.errors import ModelLoadError
from serving_runtime.models.runtimes.plugin import ArtifactKind, Framework

if TYPE_CHECKING:
    from serving_runtime.models.runtimes.base import ModelRuntime


def _discover() -> dict[str, Framework]:
    found: dict[str, Framework] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        declared = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FRAMEWORK", None)
        if isinstance(declared, Framework):
            if declared.name in found:
                raise RuntimeError(f"two framework plug-ins are named {declared.name!r}")
            found[declared.name] = declared
    return found


#: framework name -> its declaration, in name order
FRAMEWORKS: Mapping[str, Framework] = _discover()


def framework(name: str) -> Framework:
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown framework {name!r}; supported: {', '.join(FRAMEWORKS)}") from None


def runtime_class(name: str) -> type[ModelRuntime]:
    return framework(name).runtime_class()


def framework_of(estimator: Any) -> Framework:
    """The framework an in-memory fitted model belongs to (TypeError when none does)."""
    # the modules of the class and its bases (a user's subclass of XGBClassifier is
    # XGBoost's, not scikit-learn's), nearest first; testing modules before `owns` keeps
    # save_model from importing every framework
    tops = [c.__module__.split(".", 1)[0] for c in type(estimator).__mro__]
    for top in dict.fromkeys(tops):
        for fw in FRAMEWORKS.values():
            if top in fw.estimator_modules and fw.runtime_class().owns(estimator):
                return fw
    titles = ", ".join(fw.title for fw in FRAMEWORKS.values())
    raise TypeError(f"save_model supports {titles} models, not {type(estimator).__name__}")


def artifact_kinds() -> dict[str, tuple[ArtifactKind, tuple[str, ...]]]:
    """suffix -> (its kind, the frameworks that read it): the model folder's artifact table."""
    table: dict[str, tuple[ArtifactKind, tuple[str, ...]]] = {}
    for fw in FRAMEWORKS.values():
        for kind in fw.artifacts:
            have = table.get(kind.suffix)
            if have is not None and have[0] != kind:
                raise RuntimeError(f"frameworks disagree on how a {kind.suffix} file is stored")
            table[kind.suffix] = (kind, (*(have[1] if have else ()), fw.name))
    return table


__all__ = ["FRAMEWORKS", "ArtifactKind", "Framework", "artifact_kinds", "framework",
           "framework_of", "runtime_class"]
