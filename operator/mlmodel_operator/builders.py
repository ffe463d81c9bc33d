"""Pure builders: typed spec in, plain-dict manifests out.

Nothing here talks to Kubernetes or imports kopf, so every manifest can be checked in a
unit test. Names and labels follow docs/contracts.md ("Children of an MLModel"); the names
shared with the chart and the runtime are in names.py.

The Deployment is assembled from parts, each a function of the typed spec:
build_deployment -> deployment_spec -> pod_template -> pod_spec -> fetch_init_container,
runtime_container (runtime_env, runtime_probes), pod_volumes, the security contexts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from . import names
from .names import (
    FETCH_CONTAINER,
    LOAD_FAILED_METRIC,
    RUNTIME_CONTAINER,
    RUNTIME_PORT,
    TEMPLATE_HASH_LABEL,
    VERSION_LABEL,
)
from .names import FIELD_MANAGER as FIELD_MANAGER  # re-exported for `from .builders import`
from .spec import MLModelSpec

# Mount paths inside the pod: the operator's own choice, passed to the runtime and the fetch
# step through env and arguments.
MODELS_DIR = "/app/models"
SOURCE_DIR = "/mnt/model-source"
CHALLENGER_SOURCE_DIR = "/mnt/challenger-source"
CA_BUNDLE_DIR = "/etc/n1v1/ca-bundle"
AUTH_TOKENS_DIR = "/etc/n1v1/auth/tokens"  # spec.serving.auth.tokenSecret
TLS_DIR = "/etc/n1v1/tls"  # spec.serving.auth.tlsSecret
RUNTIME_UID = 10001
# Requests get this long to drain after the endpoint is removed from the Service.
PRESTOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30


@dataclass(frozen=True)
class Owner:
    """The MLModel that owns the children (what an ownerReference needs)."""

    name: str
    namespace: str
    uid: str
    generation: int = 1


@dataclass(frozen=True)
class Monitoring:
    """What the operator knows of the cluster's monitoring (its settings, docs/autoscaling.md)."""

    #: where KEDA's Prometheus trigger queries (empty: latency autoscaling unavailable)
    prometheus_url: str = ""
    #: rate window of the p95 query: a few scrape intervals; longer is steadier but slower
    latency_window: str = "1m"
    #: how often KEDA asks Prometheus (seconds)
    polling_seconds: int = 15


def labels(name: str) -> dict[str, str]:
    return {
        names.NAME_LABEL: names.APP_NAME,
        names.INSTANCE_LABEL: name,
        names.MANAGED_BY_LABEL: names.MANAGED_BY,
        names.MODEL_LABEL: name,
    }


def selector_labels(name: str) -> dict[str, str]:
    # Immutable once the Deployment exists: keep it to labels that never change.
    return {names.NAME_LABEL: names.APP_NAME, names.INSTANCE_LABEL: name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def service_url(name: str, namespace: str, scheme: str = "http") -> str:
    return f"{scheme}://{name}.{namespace}.svc.cluster.local:{RUNTIME_PORT}"


def child_metadata(owner: Owner, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or owner.name,
        "namespace": owner.namespace,
        "labels": labels(owner.name),
        "ownerReferences": [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
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


# --- Deployment parts ----------------------------------------------------------------------


def model_source(spec: MLModelSpec) -> tuple[str, dict[str, Any] | None]:
    """(URI passed to fetch, volume for /mnt/model-source or None)."""
    return source_of(spec.model, "model-source", SOURCE_DIR)


def source_of(src: Any, volume: str, mount: str) -> tuple[str, dict[str, Any] | None]:
    """(URI passed to fetch, volume mounted at `mount` or None) of one model source: a
    pvc:// or configmap:// source is mounted read-only and fetched as a local file."""
    pvc = src.pvc()
    if pvc:
        claim, path = pvc
        vol = {
            "name": volume,
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        return f"file://{mount}/{path}", vol
    cm = src.configmap()
    if cm:
        cm_name, key = cm
        vol = {"name": volume, "configMap": {"name": cm_name}}
        return (f"file://{mount}/{key}" if key else f"file://{mount}"), vol
    return src.uri, None


def container_resources(spec: MLModelSpec) -> dict[str, Any]:
    """Requests (always) and limits (when any) of both containers."""
    requests, limits = spec.serving.resources.effective()
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return resources


def container_security_context() -> dict[str, Any]:
    # Restricted Pod Security profile, plus a read-only root file system.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    # fsGroup: the emptyDir volumes are writable by the non-root runtime user.
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def fetch_args(owner: Owner, spec: MLModelSpec, fetch_uri: str, *,
               challenger: bool = False) -> list[str]:
    """`python` arguments of the fetch step: download, verify and unpack into MODELS_DIR
    (the challenger's: into MODELS_DIR/.challengers, under the same model name)."""
    src: Any = spec.challenger if challenger else spec.model
    framework = spec.challenger_framework() if challenger else spec.model.framework
    args = [
        "-m",
        names.FETCH_MODULE,
        "--uri",
        fetch_uri,
        "--dest",
        f"{MODELS_DIR}/{names.CHALLENGERS_DIR}" if challenger else MODELS_DIR,
        "--name",
        spec.served_name(owner.name),
        "--framework",
        str(framework),
        "--version",
        src.version,
    ]
    if src.sha256:
        args += ["--sha256", src.sha256]
    return args


def fetch_init_container(
    owner: Owner,
    spec: MLModelSpec,
    image: str,
    resources: dict[str, Any],
    fetch_uri: str,
    *,
    mounts_source: bool,
    challenger: bool = False,
) -> dict[str, Any]:
    """The init container that puts the model folder (or the challenger's) into the shared
    `models` volume."""
    mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": MODELS_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if mounts_source:
        mounts.append({
            "name": "challenger-source" if challenger else "model-source",
            "mountPath": CHALLENGER_SOURCE_DIR if challenger else SOURCE_DIR,
            "readOnly": True,
        })
    fetch: dict[str, Any] = {
        "name": names.FETCH_CHALLENGER_CONTAINER if challenger else FETCH_CONTAINER,
        "image": image,
        "imagePullPolicy": spec.serving.imagePullPolicy,
        "command": ["python"],
        "args": fetch_args(owner, spec, fetch_uri, challenger=challenger),
        "resources": resources,
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
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
        mounts.append({"name": "ca-bundle", "mountPath": CA_BUNDLE_DIR, "readOnly": True})
        fetch["env"] = [{"name": names.ENV_FETCH_CA_BUNDLE, "value": f"{CA_BUNDLE_DIR}/{ca.key}"}]
    return fetch


def challengers_setting(owner: Owner, spec: MLModelSpec) -> str:
    """The runtime's CHALLENGERS (server/rollout.py's ChallengerConfig, snake_case)."""
    ch = spec.challenger
    assert ch is not None
    conf: dict[str, Any] = {"mode": ch.mode}
    if spec.canary is not None:
        c = spec.canary
        conf["weight"] = c.weight
        conf["min_requests"] = c.minRequests
        if c.maxErrorRatePercent is not None:
            conf["max_error_rate_percent"] = c.maxErrorRatePercent
        if c.maxLatencyP95Milliseconds is not None:
            conf["max_latency_p95_ms"] = c.maxLatencyP95Milliseconds
    return json.dumps({spec.served_name(owner.name): conf}, sort_keys=True,
                      separators=(",", ":"))


def runtime_env(owner: Owner, spec: MLModelSpec, *,
                challenger: bool = True) -> list[dict[str, Any]]:
    """The runtime's env: what the operator owns, defaults a user may override, then the
    user's own (spec.serving.env). `challenger`: serve spec.canary / spec.shadow (False
    once it was rolled back)."""
    workers, threads = thread_layout(spec)
    env: list[dict[str, Any]] = [
        {"name": names.ENV_MODELS_DIR, "value": MODELS_DIR},
        {"name": names.ENV_PRELOAD_MODELS, "value": spec.served_name(owner.name)},
        {"name": names.ENV_HOST, "value": "0.0.0.0"},
        {"name": names.ENV_PORT, "value": str(RUNTIME_PORT)},
        {"name": names.ENV_GRPC_PORT, "value": str(names.GRPC_PORT)},
        {
            "name": names.ENV_ALLOW_UNSAFE_LOADING,
            "value": "true" if spec.model.allowUnsafeLoading else "false",
        },
        # Version and artifact are in the template so that changing them rolls the pods.
        {"name": names.ENV_MODEL_VERSION, "value": spec.model.version},
        {"name": names.ENV_MODEL_URI, "value": spec.model.uri},
    ]
    if spec.model.sha256:
        env.append({"name": names.ENV_MODEL_SHA256, "value": spec.model.sha256})
    env += auth_env(spec)
    if challenger and spec.challenger is not None:
        env.append({"name": names.ENV_CHALLENGERS, "value": challengers_setting(owner, spec)})
    user_names = {e.name for e in spec.serving.env}
    if names.ENV_WORKERS not in user_names:
        env.append({"name": names.ENV_WORKERS, "value": str(workers)})
    if names.ENV_INFERENCE_THREADS not in user_names:
        env.append({"name": names.ENV_INFERENCE_THREADS, "value": str(threads)})
    if names.ENV_EXIT_ON_LOAD_FAILURE not in user_names:
        # A model that fails to load makes the container exit 3 with the reason as its
        # termination message, so the MLModel's status can say why (instead of a pod that
        # is live but never ready). A user may still set it to false.
        env.append({"name": names.ENV_EXIT_ON_LOAD_FAILURE, "value": "true"})
    return env + [e.model_dump(exclude_none=True) for e in spec.serving.env]


def auth_env(spec: MLModelSpec) -> list[dict[str, Any]]:
    """The runtime's token and TLS settings (spec.serving.auth). The health endpoints stay
    open: the kubelet's probes and the operator's /health reads carry no token."""
    auth = spec.serving.auth
    env: list[dict[str, Any]] = []
    if auth.tokenSecret:
        env += [{"name": names.ENV_AUTH_TOKENS_DIR, "value": AUTH_TOKENS_DIR},
                {"name": names.ENV_AUTH_HEALTH, "value": names.AUTH_HEALTH_OPEN}]
    if auth.tlsSecret:
        env += [{"name": names.ENV_TLS_CERT_FILE, "value": f"{TLS_DIR}/{names.TLS_CERT_KEY}"},
                {"name": names.ENV_TLS_KEY_FILE, "value": f"{TLS_DIR}/{names.TLS_KEY_KEY}"}]
    return env


def runtime_scheme(spec: MLModelSpec) -> str:
    """http, or https when spec.serving.auth.tlsSecret is set."""
    return "https" if spec.serving.auth.tlsSecret else "http"


def auth_volumes(spec: MLModelSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, runtime volumeMounts) of the token and TLS Secrets. Not optional: a missing
    Secret keeps the pod from starting (ContainerCreating, FailedMount) rather than serving
    open. A Secret volume is refreshed in place by the kubelet: rotations need no new pod."""
    auth = spec.serving.auth
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    # 0440 with the pod's fsGroup: readable by the runtime's group, by nobody else
    for name, secret, path in (("auth-tokens", auth.tokenSecret, AUTH_TOKENS_DIR),
                               ("tls", auth.tlsSecret, TLS_DIR)):
        if secret:
            volumes.append({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}})
            mounts.append({"name": name, "mountPath": path, "readOnly": True})
    return volumes, mounts


def runtime_probes(spec: MLModelSpec) -> dict[str, dict[str, Any]]:
    """startupProbe, livenessProbe and readinessProbe of the runtime container (HTTPS
    with TLS on: the kubelet does not verify the certificate of a probe)."""
    http_get = {"port": names.RUNTIME_PORT_NAME, "scheme": runtime_scheme(spec).upper()}
    return {
        # Model loading can take a while; liveness only starts once startup has passed.
        "startupProbe": {
            "httpGet": {**http_get, "path": names.LIVE_PATH},
            "periodSeconds": 2,
            "failureThreshold": 60,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {**http_get, "path": names.LIVE_PATH},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 2,
        },
        # Ready only when the model serves (the runtime's /v2/health/ready checks that).
        "readinessProbe": {
            "httpGet": {**http_get, "path": names.READY_PATH},
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
    }


def runtime_container(
    owner: Owner, spec: MLModelSpec, image: str, resources: dict[str, Any], *,
    challenger: bool = True,
) -> dict[str, Any]:
    """The serving container: reads the fetched model folder, serves on RUNTIME_PORT."""
    return {
        "name": RUNTIME_CONTAINER,
        "image": image,
        "imagePullPolicy": spec.serving.imagePullPolicy,
        "ports": [
            {"name": names.RUNTIME_PORT_NAME, "containerPort": RUNTIME_PORT, "protocol": "TCP"},
            {"name": names.GRPC_PORT_NAME, "containerPort": names.GRPC_PORT, "protocol": "TCP"},
        ],
        "env": runtime_env(owner, spec, challenger=challenger),
        "resources": resources,
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *auth_volumes(spec)[1],
        ],
        **runtime_probes(spec),
        # Keep serving while the endpoint is removed from the Service, then stop.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def pod_volumes(spec: MLModelSpec, source_volume: dict[str, Any] | None,
                challenger_volume: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": {}},
        # Disk-backed: the runtime keeps prometheus multiprocess files (1 MiB mmaps per
        # worker and metric type) here, which must not eat the memory limit.
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    if source_volume:
        volumes.append(source_volume)
    if challenger_volume:
        volumes.append(challenger_volume)
    ca = spec.model.caBundle
    if ca:
        # optional: a missing ConfigMap or key fails the fetch with a message naming
        # spec.model.caBundle (exit 3, in the status), not a pod stuck mounting a volume.
        volumes.append({"name": "ca-bundle", "configMap": {"name": ca.configMap, "optional": True}})
    return volumes + auth_volumes(spec)[0]


def pod_spec(owner: Owner, spec: MLModelSpec, image: str, *,
             challenger: bool = True) -> dict[str, Any]:
    """`challenger`: fetch and serve spec.canary / spec.shadow too (when set)."""
    s = spec.serving
    resources = container_resources(spec)
    fetch_uri, source_volume = model_source(spec)
    init = [
        fetch_init_container(
            owner, spec, image, resources, fetch_uri, mounts_source=source_volume is not None
        )
    ]
    challenger_volume = None
    if challenger and spec.challenger is not None:
        ch_uri, challenger_volume = source_of(spec.challenger, "challenger-source",
                                              CHALLENGER_SOURCE_DIR)
        init.append(fetch_init_container(
            owner, spec, image, resources, ch_uri,
            mounts_source=challenger_volume is not None, challenger=True))
    out: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(),
        "initContainers": init,
        "containers": [runtime_container(owner, spec, image, resources, challenger=challenger)],
        "volumes": pod_volumes(spec, source_volume, challenger_volume),
    }
    if s.nodeSelector:
        out["nodeSelector"] = dict(s.nodeSelector)
    if s.tolerations:
        out["tolerations"] = [t.model_dump(exclude_none=True) for t in s.tolerations]
    return out


def scrape_annotations(spec: MLModelSpec) -> dict[str, str]:
    # For a Prometheus that discovers pods by annotation (no ServiceMonitor needed).
    out = {
        names.SCRAPE_ANNOTATION: "true",
        names.SCRAPE_PORT_ANNOTATION: str(RUNTIME_PORT),
        names.SCRAPE_PATH_ANNOTATION: names.METRICS_PATH,
    }
    if spec.serving.auth.tlsSecret:  # only then: an unchanged template rolls no pods
        out[names.SCRAPE_SCHEME_ANNOTATION] = "https"
    return out


def pod_template(owner: Owner, spec: MLModelSpec, default_image: str, *,
                 challenger: bool = True) -> dict[str, Any]:
    """The pod template, stamped with the hash of itself (TEMPLATE_HASH_LABEL)."""
    image = spec.serving.image or default_image
    template: dict[str, Any] = {
        "metadata": {
            "labels": {
                **labels(owner.name),
                VERSION_LABEL: _label_value(spec.model.version),
            },
            "annotations": scrape_annotations(spec),
        },
        "spec": pod_spec(owner, spec, image, challenger=challenger),
    }
    template["metadata"]["labels"][TEMPLATE_HASH_LABEL] = template_hash(template)
    return template


def deployment_spec(owner: Owner, spec: MLModelSpec, template: dict[str, Any]) -> dict[str, Any]:
    s = spec.serving
    out: dict[str, Any] = {
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
        out["replicas"] = s.replicas
    return out


def build_deployment(owner: Owner, spec: MLModelSpec, default_image: str, *,
                     challenger: bool = True) -> dict[str, Any]:
    """`challenger=False`: without spec.canary / spec.shadow (rolled back, docs/rollouts.md)."""
    template = pod_template(owner, spec, default_image, challenger=challenger)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(owner),
        "spec": deployment_spec(owner, spec, template),
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


def build_service(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    tls = bool(spec.serving.auth.tlsSecret)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [
                {
                    "name": names.RUNTIME_PORT_NAME,
                    "port": RUNTIME_PORT,
                    "targetPort": names.RUNTIME_PORT_NAME,
                    "protocol": "TCP",
                },
                {
                    "name": names.GRPC_PORT_NAME,
                    "port": names.GRPC_PORT,
                    "targetPort": names.GRPC_PORT_NAME,
                    "protocol": "TCP",
                    # how meshes and gateways should route it: gRPC over TLS, or h2c
                    "appProtocol": "grpc" if tls else "kubernetes.io/h2c",
                },
            ],
        },
    }


def resource_targets(a: Any) -> list[tuple[str, int]]:
    """(resource, utilization percent of the requests) that both autoscalers scale on."""
    return [("cpu", a.targetCPUUtilizationPercentage),
            ("memory", a.targetMemoryUtilizationPercentage)]


def resource_metrics(a: Any) -> list[dict[str, Any]]:
    """The HPA metrics for CPU and memory utilization (of the requests)."""
    return [
        {
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
        for resource, target in resource_targets(a)
    ]


def scale_down_behavior(a: Any) -> dict[str, Any]:
    return {"scaleDown": {"stabilizationWindowSeconds": a.scaleDownStabilizationSeconds}}


def build_hpa(owner: Owner, spec: MLModelSpec) -> dict[str, Any] | None:
    """CPU/memory autoscaling (latency needs KEDA: build_scaled_object)."""
    a = spec.serving.autoscaling
    if not a.enabled:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": a.minReplicas,
            "maxReplicas": a.maxReplicas,
            "metrics": resource_metrics(a),
            "behavior": scale_down_behavior(a),
        },
    }


def model_selector(owner: Owner, spec: MLModelSpec) -> str:
    """PromQL label matchers of the model's runtime series (the runtime labels them with the
    served name; the name pattern needs no escaping)."""
    return (
        f'namespace="{owner.namespace}",'
        f'{names.MODEL_NAME_METRIC_LABEL}="{spec.served_name(owner.name)}"'
    )


def latency_p95_query(owner: Owner, spec: MLModelSpec, window: str) -> str:
    """The model's p95 latency in seconds over all its pods; 0 when idle (no requests in the
    window: histogram_quantile gives NaN, which would stall the autoscaler)."""
    return (
        "(histogram_quantile(0.95, sum by (le) "
        f"(rate({names.LATENCY_BUCKET_SERIES}{{{model_selector(owner, spec)}}}[{window}])))"
        " >= 0) or vector(0)"
    )


def build_scaled_object(
    owner: Owner, spec: MLModelSpec, monitoring: Monitoring
) -> dict[str, Any] | None:
    """A KEDA ScaledObject: scale on the model's p95 latency (from Prometheus) and on CPU
    and memory, in one HPA that KEDA owns (keda-hpa-<name>). None without a latency target."""
    a = spec.serving.autoscaling
    if not a.enabled or a.targetLatencyMilliseconds is None:
        return None
    latency = {
        "type": "prometheus",
        # Value: replicas = ceil(current * p95 / target); the p95 is already over all pods.
        "metricType": "Value",
        "name": "p95-latency",
        "metadata": {
            "serverAddress": monitoring.prometheus_url,
            "query": latency_p95_query(owner, spec, monitoring.latency_window),
            "threshold": _fmt_number(a.targetLatencyMilliseconds / 1000),
            # no series yet (a new model) is a p95 of 0, not an error
            "ignoreNullValues": "true",
        },
    }
    resources = [
        {"type": resource, "metricType": "Utilization", "metadata": {"value": str(target)}}
        for resource, target in resource_targets(a)
    ]
    return {
        "apiVersion": names.SCALED_OBJECT_API_VERSION,
        "kind": names.SCALED_OBJECT_KIND,
        "metadata": child_metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicaCount": a.minReplicas,
            "maxReplicaCount": a.maxReplicas,
            "pollingInterval": monitoring.polling_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": scale_down_behavior(a)}},
            "triggers": [latency, *resources],
        },
    }


def build_pod_monitor(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    """A prometheus-operator PodMonitor for the model's runtime pods (every pod, ready or
    not); the series get the namespace and pod labels the alert rules select on. With TLS
    on it scrapes over HTTPS without checking the certificate: the certificate names the
    Service, Prometheus dials pod IPs, and the scrape carries no secret."""
    endpoint: dict[str, Any] = {"port": names.RUNTIME_PORT_NAME, "path": names.METRICS_PATH}
    if spec.serving.auth.tlsSecret:
        endpoint |= {"scheme": "https", "tlsConfig": {"insecureSkipVerify": True}}
    return {
        "apiVersion": names.POD_MONITOR_API_VERSION,
        "kind": names.POD_MONITOR_KIND,
        "metadata": child_metadata(owner),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner.name)},
            "podMetricsEndpoints": [endpoint],
        },
    }


def _fmt_number(x: float) -> str:
    return f"{x:.6g}"


def build_alert_rules(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    """A Prometheus rule file ({"groups": [...]}) with the model's four alerts."""
    al = spec.alerting
    name, ns = owner.name, owner.namespace
    sel = model_selector(owner, spec)
    requests, status = names.REQUESTS_METRIC, names.STATUS_METRIC_LABEL
    pods = f'namespace="{ns}",pod=~"{name}-[a-z0-9]+-[a-z0-9]+"'
    latency_s = al.latencyP95ThresholdMilliseconds / 1000
    error_ratio = al.errorRateThresholdPercent / 100
    error_statuses = names.SERVER_ERROR_STATUS
    if al.countClientErrors:
        error_statuses = f"{names.CLIENT_ERROR_STATUS}|{error_statuses}"
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
            f"(rate({names.LATENCY_BUCKET_SERIES}{{{sel}}}[5m]))) > {_fmt_number(latency_s)}",
            "warning",
            f"MLModel {ns}/{name}: p95 latency above {al.latencyP95ThresholdMilliseconds} ms",
            "p95 inference latency is {{ $value | humanizeDuration }} over the last 5 minutes.",
        ),
        rule(
            "MLModelHighErrorRate",
            f'sum(rate({requests}{{{sel},{status}=~"{error_statuses}"}}[5m]))'
            f" / sum(rate({requests}{{{sel}}}[5m])) > {_fmt_number(error_ratio)}",
            "warning",
            f"MLModel {ns}/{name}: error rate above {_fmt_number(al.errorRateThresholdPercent)}%",
            "{{ $value | humanizePercentage }} of inference requests failed over the last "
            f"5 minutes ({'4xx and 5xx' if al.countClientErrors else '5xx'}).",
        ),
        rule(
            "MLModelServiceDown",
            f"absent({names.SCRAPE_UP_METRIC}{{{pods}}} == 1)",
            "critical",
            f"MLModel {ns}/{name}: no runtime pod is up",
            "Prometheus scrapes no healthy runtime pod of this model: the Service has no backend.",
        ),
        rule(
            "MLModelLoadFailures",
            # The gauge, not the failure counter: the alert resolves as soon as a good load
            # follows (or the pod is replaced), not minutes after the counter's window.
            f"max by (namespace, pod) ({LOAD_FAILED_METRIC}{{{sel}}}) > 0",
            "warning",
            f"MLModel {ns}/{name}: the runtime failed to load the model",
            "The latest model load or reload failed in pod {{ $labels.pod }}; the previous "
            "version keeps serving if one was loaded (the pod's /health says why).",
            # A failed load is already the event; waiting would only hide it.
            for_="0m",
        ),
    ]
    return {"groups": [{"name": f"mlmodel.{ns}.{name}", "rules": rules}]}


def build_prometheus_rule(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    return {
        "apiVersion": names.PROMETHEUS_RULE_API_VERSION,
        "kind": names.PROMETHEUS_RULE_KIND,
        "metadata": child_metadata(owner),
        "spec": build_alert_rules(owner, spec),
    }


def alert_configmap_name(name: str) -> str:
    return f"{name}-alert-rules"


def build_alert_configmap(owner: Owner, spec: MLModelSpec) -> dict[str, Any]:
    """Fallback when the PrometheusRule CRD is missing: the same rules as a rule file."""
    meta = child_metadata(owner, alert_configmap_name(owner.name))
    meta["labels"] = {**meta["labels"], names.ALERT_RULES_LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {
            names.ALERT_RULES_KEY: yaml.safe_dump(build_alert_rules(owner, spec), sort_keys=False)
        },
    }
