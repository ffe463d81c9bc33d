"""Pure builders: typed spec in, plain-dict manifests out.

Nothing here talks to Kubernetes or imports kopf, so every manifest can be checked in a
unit test. Names and labels follow docs/contracts.md ("Children of an MLModel").
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from .spec import GROUP, KIND, VERSION, MLModelSpec

RUNTIME_PORT = 8000
MODELS_DIR = "/app/models"
SOURCE_DIR = "/mnt/model-source"
CA_BUNDLE_DIR = "/etc/n1v1/ca-bundle"
FIELD_MANAGER = "n1v1-mlmodel-operator"
RUNTIME_UID = 10001
# Requests get this long to drain after the endpoint is removed from the Service.
PRESTOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30
LATENCY_METRIC = "inference_latency_p95_seconds"
ERROR_STATUS_RE = "server_error"
LOAD_FAILURES_METRIC = "model_load_failures_total"
FETCH_CONTAINER = "fetch-model"
RUNTIME_CONTAINER = "runtime"
VERSION_LABEL = "serving.n1v1.io/version"
# A hash of the pod template the operator builds, on the template's own labels: pods carry
# it, so status can tell pods of the current template from older ones (pod_diagnosis.py).
TEMPLATE_HASH_LABEL = "serving.n1v1.io/template-hash"


@dataclass(frozen=True)
class Owner:
    """The MLModel that owns the children (what an ownerReference needs)."""

    name: str
    namespace: str
    uid: str
    generation: int = 1


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "n1v1-ml-serving",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "n1v1-mlmodel-operator",
        "serving.n1v1.io/model": name,
    }


def selector_labels(name: str) -> dict[str, str]:
    # Immutable once the Deployment exists: keep it to labels that never change.
    return {"app.kubernetes.io/name": "n1v1-ml-serving", "app.kubernetes.io/instance": name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def service_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{RUNTIME_PORT}"


def _metadata(owner: Owner, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or owner.name,
        "namespace": owner.namespace,
        "labels": labels(owner.name),
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def thread_layout(spec: MLModelSpec) -> tuple[int, int]:
    """(WORKERS, INFERENCE_THREADS) so that workers x threads fits the pod's CPUs.

    CPUs = the CPU limit when set, else the request, rounded down, at least 1. Workers
    default to one per CPU (the runtime's fast setting); each worker gets CPUs // workers
    threads (at least 1), so thread pools never oversubscribe the cgroup quota.
    """
    cpus = max(1, math.floor(spec.serving.resources.cpu_cores() or Decimal(1)))
    workers = spec.serving.workers or cpus
    return workers, max(1, cpus // workers)


def _source(spec: MLModelSpec) -> tuple[str, dict[str, Any] | None]:
    """(URI passed to fetch, volume for /mnt/model-source or None)."""
    m = spec.model
    pvc = m.pvc()
    if pvc:
        claim, path = pvc
        vol = {
            "name": "model-source",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        return f"file://{SOURCE_DIR}/{path}", vol
    cm = m.configmap()
    if cm:
        cm_name, key = cm
        vol = {"name": "model-source", "configMap": {"name": cm_name}}
        return (f"file://{SOURCE_DIR}/{key}" if key else f"file://{SOURCE_DIR}"), vol
    return m.uri, None


def _container_security() -> dict[str, Any]:
    # Restricted Pod Security profile, plus a read-only root file system.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_deployment(owner: Owner, spec: MLModelSpec, default_image: str) -> dict[str, Any]:
    s = spec.serving
    image = s.image or default_image
    requests, limits = s.resources.effective()
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    workers, threads = thread_layout(spec)
    fetch_uri, source_volume = _source(spec)

    fetch_args = [
        "-m",
        "serving_runtime.fetch",
        "--uri",
        fetch_uri,
        "--dest",
        MODELS_DIR,
        "--name",
        owner.name,
        "--framework",
        spec.model.framework,
        "--version",
        spec.model.version,
    ]
    if spec.model.sha256:
        fetch_args += ["--sha256", spec.model.sha256]
    fetch_mounts = [
        {"name": "models", "mountPath": MODELS_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if source_volume:
        fetch_mounts.append({"name": "model-source", "mountPath": SOURCE_DIR, "readOnly": True})
    fetch: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": image,
        "imagePullPolicy": s.imagePullPolicy,
        "command": ["python"],
        "args": fetch_args,
        "resources": resources,
        "securityContext": _container_security(),
        "volumeMounts": fetch_mounts,
        # The fetch prints its one-line reason and exits with a code per kind of failure;
        # with this the kubelet keeps that log tail in the status, where the operator (and
        # `kubectl describe`) read it.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.model.credentialsSecret:
        # Credentials reach the fetch step only; the serving container never sees them.
        fetch["envFrom"] = [{"secretRef": {"name": spec.model.credentialsSecret}}]
    ca = spec.model.caBundle
    if ca:
        fetch_mounts.append({"name": "ca-bundle", "mountPath": CA_BUNDLE_DIR, "readOnly": True})
        fetch["env"] = [{"name": "FETCH_CA_BUNDLE", "value": f"{CA_BUNDLE_DIR}/{ca.key}"}]

    env: list[dict[str, Any]] = [
        {"name": "MODELS_DIR", "value": MODELS_DIR},
        {"name": "PRELOAD_MODELS", "value": owner.name},
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "PORT", "value": str(RUNTIME_PORT)},
        {
            "name": "ALLOW_UNSAFE_LOADING",
            "value": "true" if spec.model.allowUnsafeLoading else "false",
        },
        # Version and artifact are in the template so that changing them rolls the pods.
        {"name": "MODEL_VERSION", "value": spec.model.version},
        {"name": "MODEL_URI", "value": spec.model.uri},
    ]
    if spec.model.sha256:
        env.append({"name": "MODEL_SHA256", "value": spec.model.sha256})
    user_names = {e.name for e in s.env}
    if "WORKERS" not in user_names:
        env.append({"name": "WORKERS", "value": str(workers)})
    if "INFERENCE_THREADS" not in user_names:
        env.append({"name": "INFERENCE_THREADS", "value": str(threads)})
    if "EXIT_ON_LOAD_FAILURE" not in user_names:
        # A model that fails to load makes the container exit 3 with the reason as its
        # termination message, so the MLModel's status can say why (instead of a pod that
        # is live but never ready). A user may still set it to false.
        env.append({"name": "EXIT_ON_LOAD_FAILURE", "value": "true"})
    env += [e.model_dump(exclude_none=True) for e in s.env]

    http_get = {"port": "http", "scheme": "HTTP"}
    runtime: dict[str, Any] = {
        "name": RUNTIME_CONTAINER,
        "image": image,
        "imagePullPolicy": s.imagePullPolicy,
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": resources,
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        # Model loading can take a while; liveness only starts once startup has passed.
        "startupProbe": {
            "httpGet": {**http_get, "path": "/v2/health/live"},
            "periodSeconds": 2,
            "failureThreshold": 60,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {**http_get, "path": "/v2/health/live"},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 2,
        },
        # Ready only when the model serves (the runtime's /v2/health/ready checks that).
        "readinessProbe": {
            "httpGet": {**http_get, "path": "/v2/health/ready"},
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        # Keep serving while the endpoint is removed from the Service, then stop.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }

    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {}},
        # Disk-backed: the runtime keeps prometheus multiprocess files (1 MiB mmaps per
        # worker and metric type) here, which must not eat the memory limit.
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    if source_volume:
        volumes.append(source_volume)
    if ca:
        # optional: a missing ConfigMap or key fails the fetch with a message naming
        # spec.model.caBundle (exit 3, in the status), not a pod stuck mounting a volume.
        volumes.append({"name": "ca-bundle", "configMap": {"name": ca.configMap,
                                                           "optional": True}})

    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [fetch],
        "containers": [runtime],
        "volumes": volumes,
    }
    if s.nodeSelector:
        pod_spec["nodeSelector"] = dict(s.nodeSelector)
    if s.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in s.tolerations]

    template: dict[str, Any] = {
        "metadata": {
            "labels": {
                **labels(owner.name),
                VERSION_LABEL: _label_value(spec.model.version),
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(RUNTIME_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }
    template["metadata"]["labels"][TEMPLATE_HASH_LABEL] = template_hash(template)

    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(owner.name)},
        "progressDeadlineSeconds": s.progressDeadlineSeconds,
        "revisionHistoryLimit": 5,
        # Surge one pod and never drop below the desired count: a broken version never
        # takes capacity away from the one that works.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": template,
    }
    if not s.autoscaling.enabled:
        # With autoscaling the HPA owns .spec.replicas; writing it would fight the HPA.
        deployment_spec["replicas"] = s.replicas

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner),
        "spec": deployment_spec,
    }


def template_hash(template: dict[str, Any]) -> str:
    """A short, stable hash of a pod template (without its own hash label)."""
    labels_ = {
        k: v
        for k, v in (template.get("metadata", {}).get("labels") or {}).items()
        if k != TEMPLATE_HASH_LABEL
    }
    doc = {**template, "metadata": {**template.get("metadata", {}), "labels": labels_}}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _label_value(v: str) -> str:
    # Label values allow [A-Za-z0-9._-]; '+' (semver build metadata) does not fit.
    return v.replace("+", "_")


def build_service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [
                {"name": "http", "port": RUNTIME_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def build_hpa(owner: Owner, spec: MLModelSpec) -> dict[str, Any] | None:
    a = spec.serving.autoscaling
    if not a.enabled:
        return None
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": a.targetCPUUtilizationPercentage,
                },
            },
        },
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": a.targetMemoryUtilizationPercentage,
                },
            },
        },
    ]
    if a.targetLatencyMilliseconds is not None:
        # Served by prometheus-adapter (docs/contracts.md): per-pod p95 in seconds; "100m" = 0.1 s.
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": LATENCY_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": f"{a.targetLatencyMilliseconds}m",
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": a.minReplicas,
            "maxReplicas": a.maxReplicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": a.scaleDownStabilizationSeconds}
            },
        },
    }


def _fmt_number(x: float) -> str:
    return f"{x:.6g}"


def build_alert_rules(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    """A Prometheus rule file ({"groups": [...]}) with the model's four alerts."""
    al = spec.alerting
    name, ns = owner.name, owner.namespace
    sel = f'namespace="{ns}",model_name="{name}"'
    pods = f'namespace="{ns}",pod=~"{name}-[a-z0-9]+-[a-z0-9]+"'
    latency_s = al.latencyP95ThresholdMilliseconds / 1000
    error_ratio = al.errorRateThresholdPercent / 100
    common = {"namespace": ns, "mlmodel": name, **al.labels}

    def rule(
        alert: str,
        expr: str,
        severity: str,
        summary: str,
        description: str,
        for_: str | None = None,
    ) -> dict[str, Any]:
        return {
            "alert": alert,
            "expr": expr,
            "for": for_ or al.for_,
            "labels": {"severity": severity, **common},
            "annotations": {"summary": summary, "description": description},
        }

    rules = [
        rule(
            "MLModelHighLatencyP95",
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(inference_latency_seconds_bucket{{{sel}}}[5m]))) > {_fmt_number(latency_s)}",
            "warning",
            f"MLModel {ns}/{name}: p95 latency above {al.latencyP95ThresholdMilliseconds} ms",
            "p95 inference latency is {{ $value | humanizeDuration }} over the last 5 minutes.",
        ),
        rule(
            "MLModelHighErrorRate",
            f'sum(rate(inference_requests_total{{{sel},status=~"{ERROR_STATUS_RE}"}}[5m]))'
            f" / sum(rate(inference_requests_total{{{sel}}}[5m])) > {_fmt_number(error_ratio)}",
            "warning",
            f"MLModel {ns}/{name}: error rate above {_fmt_number(al.errorRateThresholdPercent)}%",
            "{{ $value | humanizePercentage }} of inference requests failed "
            "over the last 5 minutes.",
        ),
        rule(
            "MLModelServiceDown",
            f"absent(up{{{pods}}} == 1)",
            "critical",
            f"MLModel {ns}/{name}: no runtime pod is up",
            "Prometheus scrapes no healthy runtime pod of this model: the Service has no backend.",
        ),
        rule(
            "MLModelLoadFailures",
            f"increase({LOAD_FAILURES_METRIC}{{{sel}}}[10m]) > 0",
            "warning",
            f"MLModel {ns}/{name}: the runtime failed to load the model",
            "A model load or reload failed in the last 10 minutes (pod {{ $labels.pod }}); "
            "the previous version keeps serving if one was loaded.",
            # A counter increase is already the event; waiting would only hide it.
            for_="0m",
        ),
    ]
    return {"groups": [{"name": f"mlmodel.{ns}.{name}", "rules": rules}]}


def build_prometheus_rule(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(owner),
        "spec": build_alert_rules(owner, spec),
    }


def alert_configmap_name(name: str) -> str:
    return f"{name}-alert-rules"


def build_alert_configmap(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    """Fallback when the PrometheusRule CRD is missing: the same rules as a rule file."""
    meta = _metadata(owner, alert_configmap_name(owner.name))
    meta["labels"] = {**meta["labels"], "serving.n1v1.io/alert-rules": "true"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {"rules.yaml": yaml.safe_dump(build_alert_rules(owner, spec), sort_keys=False)},
    }
