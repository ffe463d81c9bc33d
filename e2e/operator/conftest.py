"""Fixtures for the operator's e2e tests.

- ``operator_kubeconfig`` and ``run_operator``: in e2e/conftest.py (shared with e2e/realpods).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.mlmodels import MLModels, base_mlmodel

CRD_NAME = "mlmodels.serving.n1v1.io"


# ---------------------------------------------------------------- MLModel helpers


@pytest.fixture(name="base_mlmodel")
def base_mlmodel_fixture() -> Callable[..., dict]:
    """``base_mlmodel(name, model={...}, serving={...}, alerting={...}) -> dict``."""
    return base_mlmodel


@pytest.fixture
def mlmodels(operator_kubeconfig: Path, kubeconfig: Path, k8s, namespace: str) -> MLModels:
    """Acts as the admin (a user), never with the operator's credentials."""
    del operator_kubeconfig  # only needed for its side effect: the CRD is installed
    return MLModels(kubeconfig, k8s, namespace)
