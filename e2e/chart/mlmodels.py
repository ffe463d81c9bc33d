"""Small MLModel manifests and waits shared by the chart e2e tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e2e.helpers import apply_manifest, kubectl, wait_for


def mlmodel(name: str, namespace: str, *, version: str = "1.0.0",
            autoscaling: bool = False) -> dict[str, Any]:
    serving: dict[str, Any] = {"replicas": 1}
    if autoscaling:
        serving = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3,
                                   "targetLatencyMilliseconds": 50}}
    return {
        "apiVersion": "serving.n1v1.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                "framework": "sklearn",
                "version": version,
                # Never fetched: kwok fakes the pods, so the URL only has to be valid.
                "uri": f"https://models.example.invalid/{name}/{version}/model.tar.gz",
            },
            "serving": serving,
        },
    }


def get_json(kubeconfig: Path, *args: str) -> dict[str, Any] | None:
    r = kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def apply_mlmodel(kubeconfig: Path, body: dict[str, Any]) -> None:
    apply_manifest(body, kubeconfig=kubeconfig)


def condition(obj: dict[str, Any] | None, ctype: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c.get("status")
    return None


def wait_ready(kubeconfig: Path, namespace: str, name: str, timeout: float = 120) -> dict:
    return wait_for(
        lambda: (lambda m: m if condition(m, "Ready") == "True" else None)(
            get_json(kubeconfig, "mlmodel", name, "-n", namespace)),
        timeout=timeout,
        describe=f"MLModel {namespace}/{name} Ready=True",
        observe=lambda: get_json(kubeconfig, "mlmodel", name, "-n", namespace),
    )


def wait_child(kubeconfig: Path, kind: str, namespace: str, name: str,
               timeout: float = 90) -> dict[str, Any]:
    return wait_for(
        lambda: get_json(kubeconfig, kind, name, "-n", namespace),
        timeout=timeout,
        describe=f"{kind} {namespace}/{name} created by the operator",
    )


def delete_mlmodel(kubeconfig: Path, namespace: str, name: str) -> None:
    """Delete, and if a finalizer outlives its operator, drop it so nothing is left behind."""
    kubectl("delete", "mlmodel", name, "-n", namespace, "--wait=false", "--ignore-not-found",
            kubeconfig=kubeconfig)
    try:
        wait_for(lambda: get_json(kubeconfig, "mlmodel", name, "-n", namespace) is None,
                 timeout=20, describe=f"MLModel {namespace}/{name} deleted")
    except AssertionError:
        kubectl("patch", "mlmodel", name, "-n", namespace, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', kubeconfig=kubeconfig, check=False)
