"""Fixtures for the chart's e2e tests (the cluster fixtures come from e2e/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from e2e.helpers import kubectl, unique_name

E2E_LABEL = "n1v1.io/e2e"


@pytest.fixture(scope="module")
def module_namespace(kubeconfig: Path) -> Iterator[Callable[..., str]]:
    """Factory for namespaces that live as long as the test module; deleted afterwards."""
    created: list[str] = []

    def make(prefix: str, labels: Mapping[str, str] | None = None) -> str:
        name = unique_name(prefix)
        kubectl("create", "namespace", name, kubeconfig=kubeconfig)
        created.append(name)
        all_labels = {E2E_LABEL: "true", **(labels or {})}
        kubectl("label", "namespace", name, *[f"{k}={v}" for k, v in all_labels.items()],
                kubeconfig=kubeconfig)
        return name

    yield make
    for name in created:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                kubeconfig=kubeconfig, check=False)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chart")
