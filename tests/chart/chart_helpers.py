"""Run the chart through the project's own helm (the binary e2e/cluster/build caches).

Found the way the test command finds it: e2e.helpers.which() looks on PATH and in the
n1v1 cache folder for the pinned version. When it is missing the project's build step for
helm alone is run once (minutes when cold); if that fails too, tests fail with the reason,
they are never skipped.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from e2e.helpers import CLUSTER_DIR, REPO_ROOT, which

CHART = REPO_ROOT / "charts" / "mlmodel-operator"
RELEASE = "mlm"
NAMESPACE = "n1v1-system"


def kube_version() -> str:
    """The Kubernetes version the e2e cluster runs (e2e/cluster/versions.sh).

    Passed as --kube-version: a helm built from source without the release ldflags assumes
    Kubernetes v1.20 and would refuse the chart's kubeVersion constraint.
    """
    text = (CLUSTER_DIR / "versions.sh").read_text()
    m = re.search(r"^KUBERNETES_VERSION=(v[0-9.]+)", text, re.M)
    assert m, "KUBERNETES_VERSION not found in e2e/cluster/versions.sh"
    return m.group(1)


@functools.cache
def helm_bin() -> str:
    try:
        return which("helm")
    except AssertionError:
        build = CLUSTER_DIR / "build"
        if not build.exists():
            raise
        done = subprocess.run(
            [str(build), "helm"], capture_output=True, text=True, timeout=3600
        )
        if done.returncode != 0:
            raise AssertionError(
                f"helm is not built and `e2e/cluster/build helm` failed:\n{done.stderr[-3000:]}"
            ) from None
        return which("helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_bin(), *args], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def _values_args(values: Mapping[str, Any] | None, tmp: Path) -> list[str]:
    if not values:
        return []
    f = tmp / "values.yaml"
    f.write_text(yaml.safe_dump(dict(values)))
    return ["-f", str(f)]


def template(
    values: Mapping[str, Any] | None = None,
    *,
    extra: Sequence[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with ``values`` (a dict written to a values file)."""
    with tempfile.TemporaryDirectory() as tmp:
        return helm(
            "template", release, str(CHART), "--namespace", namespace,
            "--kube-version", kube_version(),
            *_values_args(values, Path(tmp)), *extra, check=check,
        )


def render(values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Rendered objects (empty documents dropped)."""
    out = template(values, **kwargs).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def lint(values: Mapping[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return helm("lint", "--strict", str(CHART), "--kube-version", kube_version(),
                    *_values_args(values, Path(tmp)), check=False)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None,
        namespace: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''} {namespace or ''}, got {len(found)}: "
        f"{[(d['kind'], d['metadata']['name']) for d in docs]}"
    )
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = one(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(docs)["env"]}


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """RBAC rules flattened to (apiGroup, resource, verb) triples."""
    return {
        (g, r, v)
        for rule in rules
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule.get("verbs", [])
    }
