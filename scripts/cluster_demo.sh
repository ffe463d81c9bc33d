#!/usr/bin/env bash
# `make cluster-demo`: the whole product on the local cluster, real pods included.
#   1. images built and e2e/cluster/up (control plane + kwok node + real node)
#   2. the Helm chart installed (CRD, RBAC, the operator's ServiceAccount)
#   3. the operator run with that ServiceAccount's token (see below), examples/xgboost-configmap.yaml
#      applied with its pods on the real node
#   4. a curl against the model's Service printed, run once, and left for you to run
# The cluster keeps running; `make cluster-down` stops it (and the operator).
# Why the operator runs as a host process: pods on the local real node have no route to the
# API server (it listens on 127.0.0.1 only), so the chart's operator pod would not work there;
# the host process uses exactly the chart's ServiceAccount and RBAC.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
images/build.sh
e2e/cluster/up
# shellcheck source=/dev/null
source e2e/.state/env
ns=demo
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create namespace n1v1-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "[demo] helm install mlmodel-operator (namespace n1v1-system, watching namespace $ns)"
helm upgrade --install mlmodel-operator charts/mlmodel-operator --namespace n1v1-system \
  --set "operator.watchNamespaces={$ns}" --wait --timeout 120s >/dev/null
sa="$(kubectl -n n1v1-system get deploy -l app.kubernetes.io/instance=mlmodel-operator \
  -o jsonpath='{.items[0].spec.template.spec.serviceAccountName}')"
token="$(kubectl -n n1v1-system create token "$sa" --duration 24h)"
sa_config=e2e/.state/demo-operator.kubeconfig
kubectl config view --raw --minify >"$sa_config"
KUBECONFIG="$sa_config" kubectl config set-credentials demo-operator --token "$token" >/dev/null
KUBECONFIG="$sa_config" kubectl config set-context --current --user demo-operator >/dev/null
chmod 600 "$sa_config"
if ! [ -f e2e/.state/pids/demo-operator.pid ] || ! kill -0 "$(cat e2e/.state/pids/demo-operator.pid)" 2>/dev/null; then
  echo "[demo] starting the operator as ServiceAccount n1v1-system/$sa (log: e2e/.state/logs/demo-operator.log)"
  KUBECONFIG="$sa_config" OPERATOR_NAMESPACES="$ns" setsid .venv/bin/python -m mlmodel_operator \
    >>e2e/.state/logs/demo-operator.log 2>&1 </dev/null &
  echo $! >e2e/.state/pids/demo-operator.pid
fi
echo "[demo] kubectl apply examples/xgboost-configmap.yaml (pods on the real node)"
.venv/bin/python - <<'PY' | kubectl -n "$ns" apply -f -
import sys, yaml
sys.path.insert(0, ".")
from e2e.realpods.cluster import place_on_real_node
docs = [d for d in yaml.safe_load_all(open("examples/xgboost-configmap.yaml")) if d]
docs = [place_on_real_node(d) if d["kind"] == "MLModel" else d for d in docs]
print(yaml.safe_dump_all(docs))
PY
kubectl -n "$ns" wait --for=condition=Ready mlmodel/tiny-xgb --timeout=180s
kubectl -n "$ns" get mlmodel tiny-xgb
ip="$(kubectl -n "$ns" get service tiny-xgb -o jsonpath='{.spec.clusterIP}')"
cmd="curl -s -X POST http://$ip:8000/predict -H 'content-type: application/json' -d '{\"model_name\": \"tiny-xgb\", \"features\": {\"spread\": [0.1], \"momentum\": [0.2], \"volume\": [0.3], \"volatility\": [0.4]}}'"
echo
echo "[demo] the model's Service answers (try it):"
echo "  $cmd"
eval "$cmd"
echo
