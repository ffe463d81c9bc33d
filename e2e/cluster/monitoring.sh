# The monitoring stack beside the real node (sourced by up/down; README "Monitoring"):
# prometheus-operator and KEDA (operator + metrics API server) as host processes, and a
# Prometheus that prometheus-operator runs as a StatefulSet on the real node, as
# kube-prometheus-stack users have it. Everything is built from Go modules (build) and the two
# images are single static binaries (oci_image.py); nothing is pulled.
# shellcheck shell=bash

MON_NAMESPACE="monitoring"
KEDA_NAMESPACE="keda"
MON_DIR="$STATE/monitoring"
API_RELAY_PORT=$((PORT_BASE + 70))       # on the pod bridge: the `kubernetes` Service's endpoint
PROM_OPERATOR_PORT=$((PORT_BASE + 71))
KEDA_METRICS_PORT=$((PORT_BASE + 72))
KEDA_PROBE_PORT=$((PORT_BASE + 73))
KEDA_GRPC_PORT=$((PORT_BASE + 74))
KEDA_ADAPTER_PORT=$((PORT_BASE + 75))
KEDA_ADAPTER_METRICS_PORT=$((PORT_BASE + 76))
PROMETHEUS_IMAGE="docker.io/local/prometheus:$PROMETHEUS_VERSION"
RELOADER_IMAGE="docker.io/local/prometheus-config-reloader:$PROMETHEUS_OPERATOR_VERSION"
# Test settings: scrape and evaluate every 2 s, so an alert fires seconds after its cause.
# (The operator's alert rules keep realistic `for:` defaults; the tests shorten them.)
MON_SCRAPE_INTERVAL="${N1V1_SCRAPE_INTERVAL:-2s}"
MON_COMPONENTS=(tcp_relay prometheus-operator keda keda-adapter)


# Why the monitoring stack cannot start, or nothing when it can.
monitoring_unsupported() {
  [ "${N1V1_MONITORING:-1}" = 0 ] && { echo "N1V1_MONITORING=0"; return; }
  [ -f "$PIDS/kubelet.pid" ] || { echo "no real node (Prometheus runs in a pod on it)"; return; }
  local c
  for c in "prometheus $PROMETHEUS_VERSION" "prometheus-operator $PROMETHEUS_OPERATOR_VERSION" \
    "prometheus-config-reloader $PROMETHEUS_OPERATOR_VERSION" "keda $KEDA_VERSION" \
    "keda-adapter $KEDA_VERSION"; do
    # shellcheck disable=SC2086
    [ -x "$(bin_path $c)" ] || { echo "${c% *} is not built (e2e/cluster/build)"; return; }
  done
  return 0
}

# Source folder of a module in the Go module cache (CRDs ship inside the modules).
module_dir() { # module version
  (cd "$CACHE/src" && GOFLAGS=-mod=mod go mod download -json "$1@$2" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
}

mon_kubectl() { "$KUBECTL_BIN" --kubeconfig "$STATE/kubeconfig" "$@"; }

# A one-binary image in the node's containerd (skipped when already there).
mon_image() { # binary path-in-image ref
  local tar="$CACHE/images/$(basename "$1")-$(basename "$(dirname "$1")").oci.tar"
  ctr_ images ls -q | grep -qxF "$3" && return 0
  mkdir -p "$CACHE/images"
  [ -f "$tar" ] || python3 "$HERE/oci_image.py" "$1" "$2" "$3" "$tar"
  ctr_ images import "$tar" >/dev/null
}

# Pods reach the API server as in any cluster: the `kubernetes` Service (10.96.0.1:443, in
# the certificate) -> an EndpointSlice on the bridge's host address -> tcp_relay -> loopback.
mon_api_for_pods() {
  start tcp_relay python3 "$HERE/tcp_relay.py" "$POD_GATEWAY" "$API_RELAY_PORT" 127.0.0.1 "$APISERVER_PORT"
  mon_kubectl apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-n1v1
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: n1v1-e2e}
addressType: IPv4
endpoints: [{addresses: ["$POD_GATEWAY"], conditions: {ready: true}}]
ports: [{name: https, port: $API_RELAY_PORT, protocol: TCP}]
EOF
}

mon_prometheus() {
  local crds
  crds="$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")/example/prometheus-operator-crd"
  mon_kubectl apply --server-side --force-conflicts -f "$crds" >/dev/null
  mon_kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
  mon_image "$(bin_path prometheus "$PROMETHEUS_VERSION")" /bin/prometheus "$PROMETHEUS_IMAGE"
  mon_image "$(bin_path prometheus-config-reloader "$PROMETHEUS_OPERATOR_VERSION")" \
    /bin/prometheus-config-reloader "$RELOADER_IMAGE"
  start prometheus-operator env KUBECONFIG="$STATE/kubeconfig" \
    "$(bin_path prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")" \
    --web.listen-address "127.0.0.1:$PROM_OPERATOR_PORT" \
    --prometheus-config-reloader "$RELOADER_IMAGE" --log-level info
  # Prometheus discovers pods/services/endpoints cluster-wide: read-only, nothing else.
  mon_kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $MON_NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: $MON_NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: n1v1-prometheus}
rules:
- apiGroups: [""]
  resources: [pods, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: n1v1-prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: n1v1-prometheus}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: $MON_NAMESPACE}]
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: n1v1, namespace: $MON_NAMESPACE}
spec:
  version: $PROMETHEUS_VERSION
  image: $PROMETHEUS_IMAGE
  serviceAccountName: prometheus
  replicas: 1
  scrapeInterval: $MON_SCRAPE_INTERVAL
  evaluationInterval: $MON_SCRAPE_INTERVAL
  # every namespace, every ServiceMonitor/PodMonitor/PrometheusRule (as kube-prometheus-stack
  # with its *SelectorNilUsesHelmValues: false)
  serviceMonitorSelector: {}
  serviceMonitorNamespaceSelector: {}
  podMonitorSelector: {}
  podMonitorNamespaceSelector: {}
  ruleSelector: {}
  ruleNamespaceSelector: {}
  nodeSelector: {n1v1.io/node: real}
  tolerations: [{key: n1v1.io/real-node, operator: Exists, effect: NoSchedule}]
  resources:
    requests: {cpu: 100m, memory: 200Mi}
    limits: {memory: 1Gi}
  retention: 1h
---
# A ClusterIP for clients outside the pod network's DNS (KEDA on the host, the tests);
# prometheus-operated, the operator's own Service, is headless.
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: $MON_NAMESPACE}
spec:
  selector: {app.kubernetes.io/name: prometheus, prometheus: n1v1}
  ports: [{name: web, port: 9090, targetPort: web}]
EOF
}

mon_keda() {
  local crds certs="$MON_DIR/keda-certs"
  crds="$(module_dir github.com/kedacore/keda/v2 "$KEDA_VERSION")/config/crd/bases"
  mon_kubectl apply --server-side --force-conflicts -f "$crds" >/dev/null
  mon_kubectl create namespace "$KEDA_NAMESPACE" >/dev/null 2>&1 || true
  # The operator's gRPC metrics service and the adapter's client share one certificate from
  # the cluster CA (mutual TLS on loopback); the adapter serves the API with it too.
  mkdir -p "$certs"
  sign keda "/CN=keda-operator" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
  cp "$PKI/ca.crt" "$certs/ca.crt"; cp "$PKI/keda.crt" "$certs/tls.crt"; cp "$PKI/keda.key" "$certs/tls.key"
  local env=(env KUBECONFIG="$STATE/kubeconfig" WATCH_NAMESPACE="" POD_NAMESPACE="$KEDA_NAMESPACE"
             KEDA_CLUSTER_OBJECT_NAMESPACE="$KEDA_NAMESPACE")
  start keda "${env[@]}" "$(bin_path keda "$KEDA_VERSION")" \
    --metrics-bind-address "127.0.0.1:$KEDA_METRICS_PORT" \
    --health-probe-bind-address "127.0.0.1:$KEDA_PROBE_PORT" \
    --metrics-service-bind-address "127.0.0.1:$KEDA_GRPC_PORT" \
    --cert-dir "$certs" --enable-cert-rotation=false \
    --enable-webhook-patching=false --enable-apiservice-patching=false
  start keda-adapter "${env[@]}" "$(bin_path keda-adapter "$KEDA_VERSION")" \
    --secure-port "$KEDA_ADAPTER_PORT" --bind-address 127.0.0.1 --cert-dir "$certs" \
    --tls-cert-file "$certs/tls.crt" --tls-private-key-file "$certs/tls.key" \
    --lister-kubeconfig "$STATE/kubeconfig" --authentication-kubeconfig "$STATE/kubeconfig" \
    --authorization-kubeconfig "$STATE/kubeconfig" \
    --metrics-service-address "127.0.0.1:$KEDA_GRPC_PORT" \
    --port "$KEDA_ADAPTER_METRICS_PORT" --v 0
  mon_kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: keda-metrics-apiserver, namespace: $KEDA_NAMESPACE}
spec: {type: ExternalName, externalName: localhost}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  service: {name: keda-metrics-apiserver, namespace: $KEDA_NAMESPACE, port: $KEDA_ADAPTER_PORT}
  group: external.metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
}

prometheus_ready() {
  [ "$(mon_kubectl get pods -n "$MON_NAMESPACE" -l app.kubernetes.io/name=prometheus \
    -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

monitoring_up() {
  local t0=$SECONDS why
  why="$(monitoring_unsupported)"
  if [ -n "$why" ]; then
    log "no monitoring stack ($why): the live-monitoring tests will fail, not skip"
    return 0
  fi
  mkdir -p "$MON_DIR"
  mon_api_for_pods
  mon_prometheus
  mon_keda
  wait_until 120 "Prometheus pod Ready" prometheus-operator prometheus_ready
  wait_until 60 "external.metrics.k8s.io available" keda-adapter mon_kubectl wait \
    --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=5s
  wait_until 60 "KEDA operator ready" keda curl -sf "http://127.0.0.1:$KEDA_PROBE_PORT/readyz"
  log "monitoring stack up in $((SECONDS - t0))s: Prometheus $(mon_kubectl get svc prometheus \
    -n "$MON_NAMESPACE" -o jsonpath='{.spec.clusterIP}'):9090, prometheus-operator, KEDA"
}

monitoring_down() {
  local c i
  for ((i = ${#MON_COMPONENTS[@]} - 1; i >= 0; i--)); do
    c="${MON_COMPONENTS[i]}"
    stop_component "$c"
  done
}
