#!/usr/bin/env bash
# Run the n1v1 e2e suite against a kind cluster (needs docker and kind on PATH; kubectl, helm
# and promtool on PATH too, or built by e2e/cluster/build). The local control plane
# (e2e/cluster/up) is what CI uses here; kind is the path for laptops and hosted CI.
#
#   e2e/kind/run-e2e.sh                # create (or reuse) the cluster, load images, run pytest
#   e2e/kind/run-e2e.sh -k rbac        # extra arguments go to pytest
#   KIND_KEEP=0 e2e/kind/run-e2e.sh    # delete the cluster afterwards
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
name="${KIND_CLUSTER_NAME:-n1v1-e2e}"
state="$repo/e2e/.state/kind"
kubeconfig="$state/kubeconfig"
mkdir -p "$state"

for tool in docker kind; do
  command -v "$tool" >/dev/null || { echo "[kind] $tool is required" >&2; exit 1; }
done

if kind get clusters 2>/dev/null | grep -qx "$name"; then
  echo "[kind] reusing cluster $name"
else
  echo "[kind] creating cluster $name"
  kind create cluster --name "$name" --config "$here/cluster.yaml" --wait 120s
fi
kind get kubeconfig --name "$name" >"$kubeconfig"
if [ "${KIND_KEEP:-1}" = 0 ]; then
  trap 'kind delete cluster --name "$name"' EXIT
fi

# Build and load the project's images when their Dockerfiles exist (tags: docs/contracts.md).
# images/build.sh builds both offline from a wheelhouse; on a laptop the base image can simply
# be pulled (it only needs python3.11 + venv).
images=()
[ -f "$repo/serving_runtime/Dockerfile" ] && images+=(n1v1-ml-serving:0.1.0)
[ -f "$repo/operator/Dockerfile" ] && images+=(n1v1-mlmodel-operator:0.1.0)
if [ ${#images[@]} -gt 0 ]; then
  export BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim-bookworm}"
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || docker pull "$BASE_IMAGE"
  if [ -x "$repo/images/build.sh" ]; then
    "$repo/images/build.sh"
  else
    [ -f "$repo/serving_runtime/Dockerfile" ] && docker build --build-arg BASE_IMAGE \
      -t n1v1-ml-serving:0.1.0 -f "$repo/serving_runtime/Dockerfile" "$repo"
    [ -f "$repo/operator/Dockerfile" ] && docker build --build-arg BASE_IMAGE \
      -t n1v1-mlmodel-operator:0.1.0 -f "$repo/operator/Dockerfile" "$repo"
  fi
  for image in "${images[@]}"; do
    echo "[kind] loading $image"
    kind load docker-image "$image" --name "$name"
  done
else
  echo "[kind] no Dockerfiles found; running without project images"
fi

# The real-pod tests (e2e/realpods) need the same three facts as on the local cluster: a node
# labelled n1v1.io/node=real, the address at which pods reach this host (the kind network's
# gateway, where the tests' model servers listen), and a route from this host to Service IPs
# (via the node's container, whose kube-proxy rules forward them).
node="$(kind get nodes --name "$name" | head -n1)"
KUBECONFIG="$kubeconfig" kubectl label node "$node" n1v1.io/node=real --overwrite >/dev/null
N1V1_POD_HOST_IP="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' \
  | tr ' ' '\n' | grep -E '^[0-9]+\.' | head -n1)"
export N1V1_POD_HOST_IP
node_ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$node")"
service_cidr="$(docker exec "$node" sh -c 'grep -o "service-cluster-ip-range=[^ ]*" \
  /etc/kubernetes/manifests/kube-apiserver.yaml | cut -d= -f2')"
if [ "$(id -u)" = 0 ]; then
  ip route replace "$service_cidr" via "$node_ip"
else
  sudo ip route replace "$service_cidr" via "$node_ip"
fi
echo "[kind] real-pod tests: node $node, pods reach this host at $N1V1_POD_HOST_IP," \
  "Service IPs $service_cidr routed via $node_ip"

[ -x "$repo/.venv/bin/pytest" ] || "$repo/scripts/bootstrap.sh"
echo "[kind] running the e2e suite against $name"
cd "$repo"
KUBECONFIG="$kubeconfig" .venv/bin/pytest -q e2e "$@"
