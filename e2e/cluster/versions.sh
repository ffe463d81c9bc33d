# Versions of every binary the local control plane uses. Sourced by build/up.
# Bumping one here makes the next `up` build it (binaries are cached per version).
KUBERNETES_VERSION=v1.37.2   # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
ETCD_VERSION=v3.6.16         # go.etcd.io/etcd/server/v3 (apiserver needs >= 3.5)
KWOK_VERSION=v0.8.0          # sigs.k8s.io/kwok: fake nodes + pod lifecycle
HELM_VERSION=v3.22.0         # helm.sh/helm/v3 (latest 3.x)
PROMETHEUS_MODULE_VERSION=v0.316.0   # Go module version of Prometheus v3.16.0 (promtool)
PROMETHEUS_VERSION=v3.16.0
METRICS_SERVER_VERSION=v0.9.0        # sigs.k8s.io/metrics-server (HPA on real CPU, real node only)
PROMETHEUS_OPERATOR_VERSION=v0.85.0   # github.com/prometheus-operator/prometheus-operator (operator + config reloader)
KEDA_VERSION=v2.21.0                  # github.com/kedacore/keda/v2 (operator + metrics API server)
KUBE_ROUTER_VERSION=v2.1.0              # github.com/cloudnativelabs/kube-router/v2: NetworkPolicy on the real node (the only v2 the proxy serves here; test cluster only)
