"""Every name the operator shares with the chart, the runtime and the monitoring stack.

One definition each, so that a rename happens in one place and the tests that hold the
other side (tests/operator/test_operator_names.py, tests/chart) see it. The contract for
users is docs/contracts.md ("Children of an MLModel", "Metrics"). A leaf module: it
imports nothing of the operator, so every other module (spec.py too) can import it.
"""

from __future__ import annotations

# --- the MLModel resource (spec.py re-exports these) --------------------------------------
GROUP = "serving.n1v1.io"
VERSION = "v1alpha1"
PLURAL = "mlmodels"
KIND = "MLModel"
API_VERSION = f"{GROUP}/{VERSION}"

# --- who writes -------------------------------------------------------------------------
OPERATOR_NAME = "n1v1-mlmodel-operator"
# Server-side apply field manager: the owner of every field the operator writes.
FIELD_MANAGER = OPERATOR_NAME
# A second manager that keeps spec.replicas for one apply when autoscaling is switched on
# (apply.needs_replicas_handover).
HANDOVER_MANAGER = f"{FIELD_MANAGER}-replicas-handover"
# The chart's OPERATOR_* env vars set the operator's settings (settings.py).
SETTINGS_ENV_PREFIX = "OPERATOR_"
# The operator's liveness endpoint (kopf's), probed by the chart's Deployment.
OPERATOR_HEALTH_PATH = "/healthz"

# --- labels -------------------------------------------------------------------------------
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP_NAME = "n1v1-ml-serving"
MANAGED_BY = OPERATOR_NAME
MODEL_LABEL = "serving.n1v1.io/model"
VERSION_LABEL = "serving.n1v1.io/version"
# A hash of the pod template the operator builds, on the template's own labels: pods carry
# it, so status can tell pods of the current template from older ones (pod_diagnosis.py).
TEMPLATE_HASH_LABEL = "serving.n1v1.io/template-hash"
# On the fallback ConfigMap of alert rules, for a Prometheus rule_files sidecar to select.
ALERT_RULES_LABEL = "serving.n1v1.io/alert-rules"

# --- annotations and kopf's bookkeeping ---------------------------------------------------
SCRAPE_ANNOTATION = "prometheus.io/scrape"
SCRAPE_PORT_ANNOTATION = "prometheus.io/port"
SCRAPE_PATH_ANNOTATION = "prometheus.io/path"
# kopf keeps its progress and diff base in annotations under the API group, not in .status.
KOPF_ANNOTATION_PREFIX = GROUP
KOPF_DIFFBASE_KEY = "last-handled-configuration"
FINALIZER = f"{GROUP}/kopf-finalizer"

# --- the runtime container ----------------------------------------------------------------
FETCH_CONTAINER = "fetch-model"
FETCH_CHALLENGER_CONTAINER = "fetch-challenger"  # the canary's or shadow's folder
RUNTIME_CONTAINER = "runtime"
FETCH_MODULE = "serving_runtime.tools.fetch"  # run as `python -m` in the init container
RUNTIME_PORT = 8000
RUNTIME_PORT_NAME = "http"
GRPC_PORT = 8081  # the Open Inference Protocol over gRPC (the runtime's GRPC_PORT default)
GRPC_PORT_NAME = "grpc"
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/health"  # JSON: each model's state and its challenger's (the operator reads it)
# The challenger's folder under MODELS_DIR (serving_runtime/models/folder_format.py's
# CHALLENGERS_DIR; a test holds the two equal).
CHALLENGERS_DIR = ".challengers"

# Env vars the operator sets on the runtime (serving_runtime/__main__.py reads them).
ENV_MODELS_DIR = "MODELS_DIR"
ENV_PRELOAD_MODELS = "PRELOAD_MODELS"
ENV_HOST = "HOST"
ENV_PORT = "PORT"
ENV_GRPC_PORT = "GRPC_PORT"
ENV_ALLOW_UNSAFE_LOADING = "ALLOW_UNSAFE_LOADING"
ENV_WORKERS = "WORKERS"
ENV_INFERENCE_THREADS = "INFERENCE_THREADS"
ENV_EXIT_ON_LOAD_FAILURE = "EXIT_ON_LOAD_FAILURE"
ENV_CHALLENGERS = "CHALLENGERS"  # JSON: the model's canary or shadow (docs/rollouts.md)
# Not read by the runtime: in the template so that a new version or artifact rolls the pods.
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_MODEL_URI = "MODEL_URI"
ENV_MODEL_SHA256 = "MODEL_SHA256"
# Read by the fetch step (its --ca-bundle default).
ENV_FETCH_CA_BUNDLE = "FETCH_CA_BUNDLE"
# Authentication and TLS of the runtime (spec.serving.auth; docs/security.md).
ENV_AUTH_TOKENS_DIR = "AUTH_TOKENS_DIR"  # a mounted Secret: each key one accepted token
ENV_AUTH_HEALTH = "AUTH_HEALTH"  # open | token: kept open, kubelet probes send no token
ENV_TLS_CERT_FILE = "TLS_CERT_FILE"
ENV_TLS_KEY_FILE = "TLS_KEY_FILE"
AUTH_HEALTH_OPEN = "open"
# Keys of a kubernetes.io/tls Secret.
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
SCRAPE_SCHEME_ANNOTATION = "prometheus.io/scheme"
# Every namespace carries its own name in this label (set by the API server).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# --- Prometheus Operator (the chart grants the operator these) ----------------------------
PROMETHEUS_RULE_API_VERSION = "monitoring.coreos.com/v1"
PROMETHEUS_RULE_KIND = "PrometheusRule"
PROMETHEUS_RULE_PLURAL = "prometheusrules"
# Key of the fallback ConfigMap's rule file (for a Prometheus rule_files mount).
ALERT_RULES_KEY = "rules.yaml"
# One PodMonitor per MLModel: Prometheus scrapes every runtime pod, ready or not (a pod
# whose load failed is exactly the one the load-failure alert must see).
POD_MONITOR_API_VERSION = "monitoring.coreos.com/v1"
POD_MONITOR_KIND = "PodMonitor"
POD_MONITOR_PLURAL = "podmonitors"

# --- KEDA (latency autoscaling; docs/autoscaling.md) ---------------------------------------
SCALED_OBJECT_API_VERSION = "keda.sh/v1alpha1"
SCALED_OBJECT_KIND = "ScaledObject"
SCALED_OBJECT_PLURAL = "scaledobjects"

# --- metrics (the runtime's registry: serving_runtime/server/metrics.py) ------------------
REQUESTS_METRIC = "inference_requests_total"  # counter
LATENCY_HISTOGRAM = "inference_latency_seconds"  # histogram; PromQL reads its _bucket series
LATENCY_BUCKET_SERIES = f"{LATENCY_HISTOGRAM}_bucket"
LOAD_FAILURES_METRIC = "model_load_failures_total"  # counter
# gauge: 1 while the model's latest load or reload failed (the previous version, if any,
# still serves), back to 0 on the next good one
LOAD_FAILED_METRIC = "model_load_failed"
# Prometheus' own per-target series (1 while the scrape succeeds), not the runtime's.
SCRAPE_UP_METRIC = "up"
MODEL_NAME_METRIC_LABEL = "model_name"

# --- what the runtime serves (serving_runtime/models/folder_format.py and runtimes/) ------
# The operator image has no ML libraries, so it restates these; tests/operator keep them
# equal to the runtime's (the name rule) and to the CRD enum and the plug-in registry.
#: a served model name: the runtime's folder name, URL segment and metric label value
SERVED_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
SERVED_NAME_MAX_LENGTH = 128
STATUS_METRIC_LABEL = "status"
SERVER_ERROR_STATUS = "server_error"  # the status label value of a failed request (5xx)
CLIENT_ERROR_STATUS = "client_error"  # ... of a refused one (4xx)
