# The real node beside the kwok node: containerd + runc + CNI bridge, kubelet, kube-proxy,
# kube-router (NetworkPolicy only) and metrics-server, all as host processes (sourced by
# up/down; see README "The real node").
# Recipe and traps: the project's shared real-pods spike. Everything it changes on the host is
# listed in node_host_changes and undone by node_down; e2e/cluster/host_state.py checks that.
# shellcheck shell=bash

NODE_DIR="$STATE/node"                  # certs, configs, kubelet root, containerd root
NODE_RUN="/run/n1v1-node"               # sockets and runtime state (tmpfs)
NODE_SOCK="$NODE_RUN/containerd.sock"
NODE_OWNER="$NODE_RUN/state-dir"        # the state dir of the cluster this host's node belongs to
REAL_NODE="127.0.0.1"                   # node name = its InternalIP (see README)
NODE_BRIDGE="n1v1br0"
POD_CIDR="10.213.0.0/24"
POD_GATEWAY="10.213.0.1"                # the host as pods see it (test servers listen here)
SERVICE_CIDR="10.96.0.0/16"
KUBELET_PORT=$((PORT_BASE + 50))
KUBELET_HEALTHZ_PORT=$((PORT_BASE + 51))
PROXY_HEALTHZ_PORT=$((PORT_BASE + 52))
PROXY_METRICS_PORT=$((PORT_BASE + 53))
METRICS_SERVER_PORT=$((PORT_BASE + 60))
PAUSE_IMAGE="docker.io/local/pause:3.10.2"
KUBELET_BIN="$(bin_path kubelet "$KUBERNETES_VERSION")"
PROXY_BIN="$(bin_path kube-proxy "$KUBERNETES_VERSION")"
METRICS_SERVER_BIN="$(bin_path metrics-server "$METRICS_SERVER_VERSION")"
KUBE_ROUTER_BIN="$(bin_path kube-router "$KUBE_ROUTER_VERSION")"
NODE_COMPONENTS=(containerd kubelet kube-proxy kube-router metrics-server)
# The kubelet's pod cgroups: cgroup v2 at the top, v1 under each controller. (A host that is
# itself a Kubernetes node with a cgroupfs kubelet has its own `kubepods`: not supported.)
NODE_CGROUPS="/sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods"
# Taint + label: kwok-based tests keep landing on the fake node; real-pod tests opt in.
REAL_NODE_LABEL="n1v1.io/node=real"
REAL_NODE_TAINT="n1v1.io/real-node=true:NoSchedule"
# Sysctls the kubelet rewrites at start (protectKernelDefaults: false), CNI turns on, or
# node_bridge_netfilter sets (the last one: kept while the node runs, put back by down).
BRIDGE_NF_SYSCTL=net.bridge.bridge-nf-call-iptables
NODE_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
              "$BRIDGE_NF_SYSCTL")
# kube-router's sets (policy pod/ipBlock sets, and the TMP-* ones of its atomic swaps).
KUBE_ROUTER_IPSETS='^(KUBE-SRC-|KUBE-DST-|TMP-)'

ctr_() { ctr --address "$NODE_SOCK" --namespace k8s.io "$@"; }

# Why a real node cannot run here, or nothing when it can.
node_unsupported() {
  [ "${N1V1_REAL_NODE:-1}" = 0 ] && { echo "N1V1_REAL_NODE=0"; return; }
  [ "$(id -u)" = 0 ] || { echo "not root"; return; }
  [ -w /sys/fs/cgroup/memory ] || [ -w /sys/fs/cgroup/cgroup.procs ] || {
    echo "no writable cgroup hierarchy"; return; }
  return 0
}

node_packages() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v ipset >/dev/null || need+=(ipset) # kube-router (the kernel side is ip_set)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  [ ${#need[@]} -eq 0 ] && return 0
  log "apt-get install ${need[*]} (real node)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
}

# ---- host state: saved before anything changes, put back by node_down ------------------------
node_save_baseline() {
  local b="$NODE_DIR/baseline"
  mkdir -p "$b"
  [ -f "$b/done" ] && return 0
  iptables-save >"$b/iptables" 2>/dev/null || true
  ip6tables-save >"$b/ip6tables" 2>/dev/null || true
  ipset list -n 2>/dev/null | sort >"$b/ipsets" || true
  local s v
  # (a sysctl absent here, e.g. net.bridge.* before br_netfilter is loaded, is not put back)
  for s in "${NODE_SYSCTLS[@]}"; do
    if v="$(sysctl -n "$s" 2>/dev/null)"; then echo "$s=$v"; fi
  done >"$b/sysctls"
  [ -d /var/log/containers ] && touch "$b/had-var-log-containers"
  [ -d /var/lib/cni ] && touch "$b/had-var-lib-cni"
  touch "$b/done"
}

# Put the baseline's sysctls back. --running: the node stays up (after the kubelet's start),
# so the one node_bridge_netfilter set on purpose is left as it is.
node_restore_sysctls() { # [--running]
  local b="$NODE_DIR/baseline" line k v
  [ -f "$b/sysctls" ] || return 0
  while IFS= read -r line; do
    k="${line%%=*}"; v="${line#*=}"
    [ "${1:-}" = --running ] && [ "$k" = "$BRIDGE_NF_SYSCTL" ] && continue
    [ "$(sysctl -n "$k")" = "$v" ] && continue
    # ip_forward back to 0 would cut off a Docker engine started since: leave it then.
    if [ "$k" = net.ipv4.ip_forward ] && [ "$v" = 0 ] && pgrep -x dockerd >/dev/null; then
      continue
    fi
    sysctl -q -w "$k=$v" >/dev/null || log "could not put $k back to $v"
  done <"$b/sysctls"
}

# Delete the iptables chains and rules that were not in the baseline (kube-proxy's KUBE-*,
# the CNI firewall plugin's CNI-*), in every table, for v4 and v6.
node_restore_iptables() { # iptables-binary baseline-file
  local ipt="$1" base="$2" table chain
  [ -f "$base" ] || return 0
  for table in filter nat mangle raw; do
    "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
    # Rules of ours in built-in chains: every -A line absent from the baseline.
    "$ipt-save" -t "$table" 2>/dev/null | grep -E '^-A ' | while IFS= read -r rule; do
      grep -qxF -- "$rule" "$base" && continue
      case "$rule" in *KUBE-*|*CNI-*|*"$NODE_BRIDGE"*|*10.213.0.*) ;; *) continue ;; esac
      # shellcheck disable=SC2086 # the rule is a word list
      eval "$ipt -t $table ${rule/#-A/-D}" 2>/dev/null || true
    done || true # (grep finding nothing is not an error)
    for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -E '^(KUBE-|CNI-)'); do
      grep -qE "^:$chain " "$base" && continue
      "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -E '^(KUBE-|CNI-)'); do
      grep -qE "^:$chain " "$base" && continue
      "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

# kube-router's ipsets that were not in the baseline. Only once no iptables rule matches them
# any more (node_restore_iptables): the kernel refuses to destroy a set still referenced.
node_restore_ipsets() {
  local base="$NODE_DIR/baseline/ipsets" s
  [ -f "$base" ] && command -v ipset >/dev/null || return 0
  for s in $(ipset list -n 2>/dev/null | grep -E "$KUBE_ROUTER_IPSETS"); do
    grep -qxF -- "$s" "$base" && continue
    ipset destroy "$s" 2>/dev/null || log "could not destroy ipset $s"
  done
}

# Pods on one bridge talk through it without crossing the host's IP stack; only with
# bridge-nf-call-iptables=1 do their packets meet iptables FORWARD, where kube-router's
# NetworkPolicy chains (and conntrack for kube-proxy's DNAT replies) are. Docker's engine
# turns it on; elsewhere it is set here and put back by down (node_restore_sysctls).
node_bridge_netfilter() {
  local f=/proc/sys/net/bridge/bridge-nf-call-iptables
  if [ ! -e "$f" ] && modprobe br_netfilter 2>/dev/null; then
    touch "$NODE_DIR/baseline/loaded-br-netfilter" # down unloads it again
  fi
  if [ ! -e "$f" ]; then
    log "no br_netfilter module: NetworkPolicies between pods of the real node are not enforced"
    return 0
  fi
  [ "$(cat "$f")" = 1 ] || sysctl -q -w "$BRIDGE_NF_SYSCTL=1" >/dev/null
}

# kube-router has done its first full NetworkPolicy sync: the ACCEPT rule that ends its
# FORWARD chain is only written by that sync's iptables-restore (its informers synced before).
kube_router_synced() {
  local rules
  rules="$(iptables -t filter -S KUBE-ROUTER-FORWARD 2>/dev/null)" || return 1
  [[ $rules == *"rule to explicitly ACCEPT traffic that comply to network policies"* ]]
}

# ---- images -----------------------------------------------------------------------------------
# pause: the static binary from the Kubernetes sources (no registry), as a one-file image.
node_pause_image() {
  local dir="$CACHE/images/pause-$KUBERNETES_VERSION" src
  if [ ! -x "$dir/pause" ]; then
    src="$(GOFLAGS=-mod=mod go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
    [ -f "$src" ] || (cd "$CACHE/src/kubernetes-$KUBERNETES_VERSION" && go mod download k8s.io/kubernetes)
    mkdir -p "$dir"
    gcc -Os -static -o "$dir/pause" "$src"
    strip "$dir/pause" 2>/dev/null || true
  fi
  if ! ctr_ images ls -q | grep -qxF "$PAUSE_IMAGE"; then
    python3 "$HERE/oci_image.py" "$dir/pause" /pause "$PAUSE_IMAGE" "$dir/pause.oci.tar"
    ctr_ images import "$dir/pause.oci.tar" >/dev/null
  fi
}

# The project's images, from the local Docker engine into the node's containerd (pods use
# them with imagePullPolicy IfNotPresent/Never; nothing is pulled). Re-imported when the
# Docker image id changed. Usage: node_load_images [image...] (default: both project images).
node_load_images() {
  local images=("$@") img id mark
  if [ ${#images[@]} -eq 0 ]; then
    # shellcheck source=../../images/lib.sh
    images=("$(source "$E2E/../images/lib.sh" && echo "$RUNTIME_IMAGE")"
            "$(source "$E2E/../images/lib.sh" && echo "$OPERATOR_IMAGE")")
  fi
  for img in "${images[@]}"; do
    if ! id="$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null)"; then
      log "image $img is not in Docker (images/build.sh builds it); not imported"
      continue
    fi
    mark="$NODE_DIR/imported/$(echo "$img" | tr '/:' '__')"
    [ -f "$mark" ] && [ "$(cat "$mark")" = "$id" ] && continue
    log "importing $img into the node's containerd"
    docker save "$img" | ctr_ images import - >/dev/null
    mkdir -p "$NODE_DIR/imported"; echo "$id" >"$mark"
  done
}

# ---- certificates and configs -----------------------------------------------------------------
node_configs() {
  local d="$NODE_DIR"
  mkdir -p "$d/cni/net.d" "$d/kubelet" "$d/logs/pods" "$NODE_RUN"
  echo "$STATE" >"$NODE_OWNER"
  sign kubelet "/O=system:nodes/CN=system:node:$REAL_NODE" clientAuth
  sign kube-proxy "/CN=system:kube-proxy" clientAuth
  kubeconfig "$d/kubelet.kubeconfig" kubelet "system:node:$REAL_NODE"
  kubeconfig "$d/kube-proxy.kubeconfig" kube-proxy kube-proxy

  cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd"
state = "$NODE_RUN/containerd"
[grpc]
  address = "$NODE_SOCK"
[ttrpc]
  address = "$NODE_RUN/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM's root lacks CAP_SYS_RESOURCE: no negative oom_score_adj (runc fails otherwise).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni/net.d"
EOF

  # Pods get routes to their own subnet and the Service range only: no default route out.
  cat >"$d/cni/net.d/10-n1v1.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "n1v1-node",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$d/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
              "routes": [{"dst": "$SERVICE_CIDR"}]}},
    {"type": "firewall", "backend": "iptables"}
  ]
}
EOF

  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$NODE_SOCK
address: 127.0.0.1
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
podLogsDir: "$d/logs/pods"
volumePluginDir: "$d/kubelet/volume-plugins"
resolvConf: ""
failSwapOn: false
makeIPTablesUtilChains: false
oomScoreAdj: 0
# containerd 1.6 does not pin the sandbox image: image GC would delete pause (and our
# imported images, which cannot be pulled back).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
# ConfigMap/Secret volumes (Prometheus' config and rule files from prometheus-operator) are
# refreshed at each pod sync: every 10 s instead of every minute, so a new rule loads in
# seconds in the live-monitoring tests.
syncFrequency: 10s
registerWithTaints:
- {key: n1v1.io/real-node, value: "true", effect: NoSchedule}
EOF

  cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$d/kube-proxy.kubeconfig"}
mode: iptables
hostnameOverride: "$REAL_NODE"
clusterCIDR: "$POD_CIDR"
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$POD_GATEWAY/32"]
iptables: {localhostNodePorts: false}
# 0 = leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
oomScoreAdj: 0
EOF
}

node_network() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
    ip addr add "$POD_GATEWAY/24" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
  fi
  # Service IPs from the host leave by our bridge with the bridge's address: they can never
  # take the default route out, and pods can answer without masquerading.
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$POD_GATEWAY"
}

node_kubectl() { "$KUBECTL_BIN" --kubeconfig "$STATE/kubeconfig" "$@"; }

metrics_server_apiservice() {
  node_kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec: {type: ExternalName, externalName: localhost}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  service: {name: metrics-server, namespace: kube-system, port: $METRICS_SERVER_PORT}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
}

node_up() {
  local t0=$SECONDS why
  why="$(node_unsupported)"
  if [ -n "$why" ]; then
    log "no real node ($why): only the kwok node (real-pod tests will fail, not skip)"
    return 0
  fi
  node_packages
  node_save_baseline
  node_configs
  node_network
  node_bridge_netfilter
  start containerd containerd --config "$NODE_DIR/containerd.toml"
  wait_until 30 "containerd socket" containerd ctr_ version
  node_pause_image
  node_load_images
  start kubelet "$KUBELET_BIN" --config "$NODE_DIR/kubelet.yaml" \
    --kubeconfig "$NODE_DIR/kubelet.kubeconfig" --hostname-override "$REAL_NODE" \
    --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet/pki" \
    --node-labels "$REAL_NODE_LABEL"
  start kube-proxy "$PROXY_BIN" --config "$NODE_DIR/kube-proxy.yaml"
  wait_until 60 "node $REAL_NODE Ready" kubelet node_kubectl wait --for=condition=Ready \
    "node/$REAL_NODE" --timeout=5s
  log "real node $REAL_NODE Ready $((SECONDS - t0))s after containerd started"
  # The kubelet set its kernel defaults once at start; put the host's values back.
  node_restore_sysctls --running
  # NetworkPolicy: kube-router with its firewall controller only (no routing, no service
  # proxy, no CNI: those stay bridge + kube-proxy). It reads the Node object at start, so it
  # starts once the kubelet registered it. No health port: v2.1.0 serves it on every
  # interface, with net/http/pprof's handlers on the same mux; no metrics port either.
  start kube-router "$KUBE_ROUTER_BIN" --kubeconfig "$STATE/kubeconfig" \
    --hostname-override "$REAL_NODE" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --enable-ipv4=true --enable-ipv6=false \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --health-port 0 --metrics-port 0
  wait_until 60 "kube-router's first NetworkPolicy sync" kube-router kube_router_synced
  start metrics-server "$METRICS_SERVER_BIN" --kubeconfig "$STATE/kubeconfig" \
    --authentication-kubeconfig "$STATE/kubeconfig" --authorization-kubeconfig "$STATE/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$METRICS_SERVER_PORT" \
    --cert-dir "$NODE_DIR/metrics-server" \
    --kubelet-insecure-tls --kubelet-use-node-status-port \
    --kubelet-preferred-address-types InternalIP \
    --node-selector "kubernetes.io/hostname=$REAL_NODE" \
    --metric-resolution 15s --kubelet-request-timeout 5s
  metrics_server_apiservice
  wait_until 60 "metrics.k8s.io available" metrics-server node_kubectl wait \
    --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=5s
}

# ---- clusters killed without `down` -------------------------------------------------------------
# The bridge, /run/n1v1-node, the kubepods cgroups and kube-proxy's rules are host-wide, so a
# run killed without `down` (a CI job's timeout, a closed session) leaves them to the next run,
# in whichever checkout. Its state dir is named in $NODE_OWNER or by the kubelet's root mount.
node_other_states() {
  {
    [ -f "$NODE_OWNER" ] && cat "$NODE_OWNER"
    findmnt -rn -o TARGET | sed -n 's#^\(/.*\)/node/kubelet$#\1#p'
  } | sort -u | while read -r s; do
    [ "$s" != "$STATE" ] && [ -d "$s/node/baseline" ] && echo "$s"
  done || true
}

# Tear down (with this checkout's `down`, its logs kept) every other checkout's dead cluster.
# Fails, naming it, when another one still runs: one host holds one real node.
node_reap_others() {
  local s live=0
  [ "${N1V1_REAPING:-0}" = 1 ] && return 0
  for s in $(node_other_states); do
    if state_live "$s"; then
      log "a local cluster from $s is running (one real node per host); stop it first: N1V1_CLUSTER_STATE=$s $HERE/down"
      live=1
      continue
    fi
    log "cleaning up after the cluster of $s, which stopped without down (its logs are kept)"
    N1V1_REAPING=1 N1V1_CLUSTER_STATE="$s" N1V1_KEEP_LOGS=1 "$HERE/down" || true
  done
  return "$live"
}

# Stop the node's processes and undo everything node_up did on the host.
node_down() {
  local c pid i
  [ -d "$NODE_DIR" ] || [ -d "$NODE_RUN" ] || return 0
  # kube-router before the iptables cleanup below, which it would otherwise undo.
  for c in metrics-server kube-router kube-proxy kubelet; do stop_component "$c"; done
  # Containers: kill every task in our containerd (no kubelet left to stop them gracefully).
  if live_pid containerd >/dev/null; then
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$c" >/dev/null 2>&1 || true; done
    for i in $(seq 50); do [ -z "$(ctr_ tasks ls -q 2>/dev/null)" ] && break; sleep 0.1; done
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks rm -f "$c" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$c" >/dev/null 2>&1 || true; done
  fi
  stop_component containerd
  # Shims whose containerd is gone (a crash, a SIGKILL): they run with our socket path.
  for pid in $(pgrep -f "containerd-shim.*-address $NODE_SOCK" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Any process left in the kubelet's cgroups (pods of a crashed run).
  for c in $NODE_CGROUPS; do
    [ -d "$c" ] || continue
    find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  sleep 0.2
  # Mounts under our dirs (kubelet root bind mount, projected tokens, overlay rootfs, netns,
  # shm), deepest first.
  findmnt -rn -o TARGET | grep -E "^($NODE_DIR|$NODE_RUN)(/|$)" | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done || true
  # kubepods cgroups, leaves first.
  for c in $NODE_CGROUPS; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # Only our route (by device): another route for the same range (kind's) is not ours.
  ip route del "$SERVICE_CIDR" dev "$NODE_BRIDGE" 2>/dev/null || true
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link del "$NODE_BRIDGE" || log "could not delete bridge $NODE_BRIDGE"
  fi
  node_restore_iptables iptables "$NODE_DIR/baseline/iptables"
  node_restore_iptables ip6tables "$NODE_DIR/baseline/ip6tables"
  node_restore_ipsets
  node_restore_sysctls
  # Loaded by up: unloaded, or every other bridge on the host would keep passing iptables.
  # (Busy, e.g. a Docker engine started since: it stays, and host_state.py says so.)
  if [ -f "$NODE_DIR/baseline/loaded-br-netfilter" ]; then
    modprobe -r br_netfilter 2>/dev/null || log "br_netfilter is in use: left loaded"
  fi
  # Files the kubelet and libcni keep outside our dirs.
  find /var/log/containers -maxdepth 1 -lname "$NODE_DIR/*" -delete 2>/dev/null || true
  [ -f "$NODE_DIR/baseline/had-var-log-containers" ] || rmdir /var/log/containers 2>/dev/null || true
  # Results of our bridge network and of the loopback one, whose sandbox is one of our netns.
  rm -rf /var/lib/cni/results/n1v1-node-* 2>/dev/null || true
  grep -lsF "\"sandbox\":\"$NODE_RUN/" /var/lib/cni/results/* | xargs -r rm -f || true
  [ -f "$NODE_DIR/baseline/had-var-lib-cni" ] || rm -rf /var/lib/cni 2>/dev/null || true
  rm -rf "$NODE_RUN"
}
