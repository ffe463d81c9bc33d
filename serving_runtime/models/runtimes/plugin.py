"""What a framework plug-in declares, without importing the framework or numpy.

Each framework is one package under `serving_runtime/models/runtimes/` whose `__init__.py`
holds a `FRAMEWORK = Framework(...)`: its name, the artifact files it reads, the formats
`save_model` writes and where its `ModelRuntime` class lives. The registry
(`runtimes/__init__.py`) finds the packages; the model-folder format, fetch, `save_model`
and the fast path all ask it instead of naming frameworks. Reading a declaration costs no
import of numpy, scikit-learn, XGBoost or LightGBM, so the fetch init container stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime interface imports numpy; declarations must not
    from serving_runtime.models.runtimes.base import ModelRuntime


@dataclass(frozen=True)
class ArtifactKind:
    """One artifact file type: `.pkl` is stored in a model folder as `model.joblib`."""

    suffix: str
    stored_name: str
    #: False for pickle/joblib: reading it runs code, so only ALLOW_UNSAFE_LOADING reads it
    safe: bool = True


#: pickle and joblib files: stored under one name, read only when unsafe loading is allowed
PICKLE_KINDS = (
    ArtifactKind(".joblib", "model.joblib", safe=False),
    ArtifactKind(".pkl", "model.joblib", safe=False),
    ArtifactKind(".pickle", "model.joblib", safe=False),
)


@dataclass(frozen=True)
class Framework:
    """A framework plug-in's declaration (see the module docstring)."""

    #: `framework` in metadata.json, the MLModel's spec.model.framework, fetch's --framework
    name: str
    #: how people write it ("scikit-learn", "XGBoost") in messages
    title: str
    #: the module whose `__version__` a saved folder records as framework_version
    library: str
    #: every artifact file this framework reads, safe formats first
    artifacts: tuple[ArtifactKind, ...]
    #: the formats `save_model(artifact_format=...)` writes; the first is the default
    save_formats: tuple[str, ...]
    #: top-level modules whose objects may belong to this framework (`xgboost` for
    #: XGBClassifier): the cheap first test before the runtime's own `owns(obj)`
    estimator_modules: tuple[str, ...]
    #: "package.module:ClassName" of its ModelRuntime, imported on first use
    runtime: str

    def runtime_class(self) -> type[ModelRuntime]:
        module, _, cls = self.runtime.partition(":")
        found: type[ModelRuntime] = getattr(importlib.import_module(module), cls)
        return found

    @property
    def safe_suffixes(self) -> tuple[str, ...]:
        return tuple(k.suffix for k in self.artifacts if k.safe)

    def describe_suffixes(self) -> str:
        """".skops (or .joblib/.pkl/.pickle with unsafe loading allowed)" for messages."""
        safe = "/".join(self.safe_suffixes)
        unsafe = "/".join(k.suffix for k in self.artifacts if not k.safe)
        return f"{safe} (or {unsafe} with unsafe loading allowed)" if unsafe else safe
