"""Models in real pods for the live-monitoring tests: deploy one, load it, break it.

Sources are served by the test host (``model_site``); the runtime image runs on the real
node, scraped by the cluster's Prometheus through the operator's PodMonitor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from e2e.helpers import wait_for
from e2e.mlmodels import MLModels, base_mlmodel
from e2e.monitoring.prometheus import Prometheus, wait_seconds
from e2e.realpods.cluster import (
    RUNTIME_IMAGE,
    cluster_url,
    place_on_real_node,
    wait_service_answers,
)
from e2e.realpods.models import rows, sklearn_folder, slow_forest_folder, tar_folder

VERSION = "1.0.0"
# One core's half per pod, request = limit: CPU utilization tops out at 100 %, so a
# 100 % CPU target never scales and latency is what the autoscaling test sees.
HALF_CORE = {"requests": {"cpu": "500m", "memory": "512Mi"},
             "limits": {"cpu": "500m", "memory": "1Gi"}}


def deploy(models: MLModels, site: Any, tmp_path: Path, name: str, *, slow: bool = False,
           **sections: dict[str, Any]) -> tuple[str, list[str]]:
    """An MLModel serving a real model folder (the slow forest, fast path off, or a small
    forest) on the real node; returns (its Service URL, feature names) once Ready."""
    make = slow_forest_folder if slow else sklearn_folder
    folder, names = make(tmp_path / "models", name, VERSION)
    tar_folder(folder, site.root / f"{name}.tar.gz")
    body = place_on_real_node(base_mlmodel(
        name, model={"framework": "sklearn", "version": VERSION,
                     "uri": f"{site.url}/{name}.tar.gz"}, **sections))
    serving = body["spec"]["serving"]
    serving["resources"] = HALF_CORE
    if slow:
        serving["env"] = [*serving.get("env", []), {"name": "FAST_PATH", "value": "false"}]
    models.apply(body)
    models.wait_ready(name, timeout=180)
    url = cluster_url(models, name)
    wait_service_answers(url)
    return url, names


def predict_body(name: str, names: list[str], n: int = 200) -> dict[str, Any]:
    return {"model_name": name, "features": rows(names, n)}


def wait_rule_loaded(prom: Prometheus, alertname: str, namespace: str) -> float:
    """PrometheusRule -> prometheus-operator -> rule file -> config reloader -> Prometheus."""
    return wait_seconds(lambda: prom.rule_loaded(alertname, namespace), 150,
                        f"{alertname} of {namespace} loaded by Prometheus", interval=2)


def wait_scraped(prom: Prometheus, namespace: str, name: str, pods: int = 1) -> float:
    """The PodMonitor's targets: `pods` runtime pods scraped, `up` 1."""
    return wait_seconds(lambda: prom.targets_up(namespace, name) >= pods, 150,
                        f"{pods} pod(s) of {namespace}/{name} scraped", interval=2)


def not_firing_for(prom: Prometheus, alertname: str, namespace: str, seconds: float) -> None:
    """The alert stays quiet while nothing is wrong (the rule does not fire on its own)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert not prom.firing(alertname, namespace), f"{alertname} fired with nothing wrong"
        time.sleep(1)


def reload(url: str, name: str) -> None:
    r = httpx.post(f"{url}/reload/{name}", timeout=10)
    assert r.status_code == 202, r.text


def model_health(url: str, name: str) -> dict[str, Any]:
    body = httpx.get(f"{url}/health", timeout=5).json()
    (m,) = [m for m in body["models"] if m["name"] == name]
    return m


def run_in_pod(models: MLModels, k8s: Any, pod: str, container: str, script: str,
               timeout: float = 60) -> None:
    """Run `python -c script` in an ephemeral container of `pod` that mounts the pod's
    model folder volume read-write (the runtime's own mount is read-only): how a file under a
    running runtime changes, which nothing else in a pod the operator made can do."""
    # The subresource takes a Pod: a body without "spec" is accepted and silently ignored.
    spec = {"spec": {"ephemeralContainers": [{
        "name": container, "image": RUNTIME_IMAGE, "imagePullPolicy": "Never",
        "command": ["python", "-c", script],
        "volumeMounts": [{"name": "models", "mountPath": "/app/models"}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }]}}
    k8s.core.patch_namespaced_pod_ephemeralcontainers(pod, models.ns, spec)

    def finished() -> dict[str, Any] | None:
        p = k8s.core.read_namespaced_pod(pod, models.ns)
        for st in p.status.ephemeral_container_statuses or []:
            if st.name == container and st.state.terminated is not None:
                return {"exit": st.state.terminated.exit_code,
                        "message": st.state.terminated.message}
        return None

    done = wait_for(finished, timeout=timeout, describe=f"ephemeral container {container}",
                    observe=lambda: str(k8s.core.read_namespaced_pod(pod, models.ns).status))
    assert done["exit"] == 0, f"{container} failed: {done}"
