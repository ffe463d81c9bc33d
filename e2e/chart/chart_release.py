"""Install the chart on the cluster under test and run the operator as its ServiceAccount.

Used by e2e/chart/ and by e2e/conftest.py's ``operator_kubeconfig`` fixture, so the
operator's own scenarios run with exactly the RBAC the chart grants.

The operator pod the chart creates runs on a kwok node, which fakes it (nothing executes);
the real operator is a host process (``python -m mlmodel_operator``) that gets the chart
Deployment's OPERATOR_* environment and a kubeconfig holding a ``kubectl create token``
token for the chart's ServiceAccount, so every API call it makes is authorised by the
chart's (Cluster)Roles and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.helpers import (
    REPO_ROOT,
    helm,
    kubectl,
    serviceaccount_kubeconfig,
    tool_env,
    unique_name,
)
from e2e.operator_process import OperatorProcess

CHART = REPO_ROOT / "charts" / "mlmodel-operator"


@dataclass
class ChartRelease:
    kubeconfig: Path  # admin
    release: str
    namespace: str

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--namespace", self.namespace, kubeconfig=self.kubeconfig, **kwargs)

    def deployment(self) -> dict[str, Any]:
        out = kubectl(
            "get", "deployment", "-n", self.namespace, "-o", "json",
            "-l", f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=operator",
            kubeconfig=self.kubeconfig,
        ).stdout
        items = json.loads(out)["items"]
        assert len(items) == 1, f"expected one operator Deployment for {self.release}: {items}"
        return items[0]

    @property
    def fullname(self) -> str:
        return self.deployment()["metadata"]["name"]

    @property
    def serviceaccount(self) -> str:
        return self.deployment()["spec"]["template"]["spec"]["serviceAccountName"]

    def operator_env(self) -> dict[str, str]:
        """OPERATOR_* variables exactly as the chart set them on the operator container."""
        (c,) = self.deployment()["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value", "") for e in c.get("env", [])}

    def sa_kubeconfig(self, dest: Path) -> Path:
        return serviceaccount_kubeconfig(self.kubeconfig, self.namespace, self.serviceaccount, dest)

    def upgrade(self, values: Mapping[str, Any] | None = None, *extra: str,
                tmp: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.helm("upgrade", self.release, str(CHART), *_values_args(values, tmp),
                         *extra, "--wait", "--timeout", "180s", timeout=240, check=check)

    def uninstall(self) -> None:
        self.helm("uninstall", self.release, "--wait", "--timeout", "120s", timeout=180)


def _values_args(values: Mapping[str, Any] | None, tmp: Path) -> list[str]:
    if not values:
        return []
    tmp.mkdir(parents=True, exist_ok=True)
    f = tmp / f"values-{time.monotonic_ns()}.yaml"
    f.write_text(yaml.safe_dump(dict(values)))
    return ["-f", str(f)]


def install_chart(
    kubeconfig: Path,
    namespace: str,
    *,
    tmp: Path,
    values: Mapping[str, Any] | None = None,
    release: str | None = None,
) -> ChartRelease:
    """`helm install --wait` into an existing namespace; the pods are kwok's fakes."""
    rel = ChartRelease(kubeconfig, release or unique_name("mlmop"), namespace)
    rel.helm("install", rel.release, str(CHART), *_values_args(values, tmp),
             "--wait", "--timeout", "180s", timeout=240)
    return rel


@contextmanager
def run_operator(
    sa_kubeconfig: Path,
    chart_env: Mapping[str, str],
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[OperatorProcess]:
    """Run `python -m mlmodel_operator` as a host process with the chart's settings
    (its OPERATOR_* env; none of the caller's own OPERATOR_* leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATOR_")}
    env.update(tool_env())
    env.update({k: v for k, v in chart_env.items() if k.startswith("OPERATOR_")})
    env["KUBECONFIG"] = str(sa_kubeconfig)
    env.update(extra_env or {})
    op = OperatorProcess(env, log_path)
    try:
        yield op.start()
    finally:
        op.stop()


@contextmanager
def chart_operator_identity(
    kubeconfig: Path, tmp: Path, values: Mapping[str, Any] | None = None
) -> Iterator[Path]:
    """Install the chart (cluster-wide unless ``values`` say otherwise) in a fresh namespace
    and yield a kubeconfig for its ServiceAccount; uninstall and clean up afterwards."""
    with chart_release_for_operator(kubeconfig, tmp, values) as (_, sa_config):
        yield sa_config


@contextmanager
def chart_release_for_operator(
    kubeconfig: Path, tmp: Path, values: Mapping[str, Any] | None = None
) -> Iterator[tuple[ChartRelease, Path]]:
    """The release (its operator_env() is what the chart gives the operator) and a
    kubeconfig for its ServiceAccount; uninstalled and cleaned up afterwards.

    The chart's crds/ are also applied server-side after the install, the way the chart
    README says to upgrade CRDs: `helm install` skips CRDs that already exist, and the
    suite must test the CRD of this checkout, not whatever an earlier run left behind.
    """
    namespace = unique_name("n1v1-operator-e2e")
    kubectl("create", "namespace", namespace, kubeconfig=kubeconfig)
    kubectl("label", "namespace", namespace, "n1v1.io/e2e=true",
            "pod-security.kubernetes.io/enforce=restricted", kubeconfig=kubeconfig)
    rel: ChartRelease | None = None
    try:
        rel = install_chart(kubeconfig, namespace, tmp=tmp, values=values)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"),
                kubeconfig=kubeconfig)
        kubectl("wait", "--for=condition=Established", "crd/mlmodels.serving.n1v1.io",
                "--timeout=60s", kubeconfig=kubeconfig)
        yield rel, serviceaccount_kubeconfig(
            kubeconfig, namespace, rel.serviceaccount, tmp / "chart-operator.kubeconfig",
            duration="3h",
        )
    finally:
        if rel is not None:
            rel.helm("uninstall", rel.release, "--wait", check=False, timeout=180)
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found",
                kubeconfig=kubeconfig, check=False)
