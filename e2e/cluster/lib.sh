# Shared by up/down: paths, ports, binary locations, process helpers. Sourced, not run.
# shellcheck shell=bash
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E="$(dirname "$HERE")"
# shellcheck source=versions.sh
source "$HERE/versions.sh"
CACHE="${N1V1_CACHE:-$HOME/.cache/n1v1}"
# N1V1_CLUSTER_STATE: another checkout's state dir, for cleaning up after its killed cluster
# (node_reap_others); otherwise always this checkout's.
STATE="${N1V1_CLUSTER_STATE:-$E2E/.state}"
PKI="$STATE/pki"
PIDS="$STATE/pids"
LOGS="$STATE/logs"

# Ports: loopback only, away from the defaults (2379/6443/10257/10259) and below the kernel's
# ephemeral range (32768+), where outgoing connections could take them first. Override the
# base to run two clusters side by side.
PORT_BASE="${N1V1_CLUSTER_PORT_BASE:-24400}"
ETCD_PORT=$((PORT_BASE + 1))
ETCD_PEER_PORT=$((PORT_BASE + 2))
APISERVER_PORT=$((PORT_BASE + 3))
KCM_PORT=$((PORT_BASE + 4))
SCHEDULER_PORT=$((PORT_BASE + 5))
KWOK_PORT=$((PORT_BASE + 6))
SERVER="https://127.0.0.1:$APISERVER_PORT"
NODE_NAME="${N1V1_KWOK_NODE:-kwok-node-0}"

bin_path() { # component version
  echo "$CACHE/bin/$1-$2/$1"
}
ETCD_BIN="$(bin_path etcd "$ETCD_VERSION")"
APISERVER_BIN="$(bin_path kube-apiserver "$KUBERNETES_VERSION")"
KCM_BIN="$(bin_path kube-controller-manager "$KUBERNETES_VERSION")"
SCHEDULER_BIN="$(bin_path kube-scheduler "$KUBERNETES_VERSION")"
KUBECTL_BIN="$(bin_path kubectl "$KUBERNETES_VERSION")"
KWOK_BIN="$(bin_path kwok "$KWOK_VERSION")"
TOOL_PATH="$(dirname "$KUBECTL_BIN"):$(dirname "$KWOK_BIN"):$(dirname "$(bin_path helm "$HELM_VERSION")"):$(dirname "$(bin_path promtool "$PROMETHEUS_VERSION")")"

# Start order; down stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { echo "[cluster] $*" >&2; }

# pid of a component we started, if that process is still alive and still runs our binary
# (guards against pid reuse after a reboot or a crash).
live_pid() { # component
  local f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
  echo "$pid"
}

# Whether any process that a state dir's `up` started still runs.
state_live() { # state-dir
  local f
  for f in "$1"/pids/*.pid; do
    [ -f "$f" ] && PIDS="$1/pids" live_pid "$(basename "$f" .pid)" >/dev/null && return 0
  done
  return 1
}

# GET an apiserver path as the admin; prints the body.
api_get() { # path
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$SERVER$1"
}

# Poll `cmd...` until it succeeds, for at most <seconds>; fail early if <component> (the
# process being waited on, "-" for none) has died, showing the end of its log.
wait_until() { # seconds what component cmd...
  local limit="$1" what="$2" comp="$3" start=$SECONDS
  shift 3
  until "$@" >/dev/null 2>&1; do
    if [ "$comp" != - ] && ! live_pid "$comp" >/dev/null; then
      log "$comp exited while waiting for $what; last log lines:"
      tail -n 20 "$LOGS/$comp.log" >&2 || true
      return 1
    fi
    if ((SECONDS - start >= limit)); then
      log "timed out after ${limit}s waiting for $what (logs: $LOGS)"
      return 1
    fi
    sleep 1
  done
}

apiserver_ready() { [ "$(api_get /readyz 2>/dev/null)" = ok ]; }

# Every component we started is alive and the apiserver answers /readyz.
cluster_healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do live_pid "$c" >/dev/null || return 1; done
  if [ -f "$PIDS/kubelet.pid" ]; then # started with the real node: all of it must be alive
    for c in "${NODE_COMPONENTS[@]}"; do live_pid "$c" >/dev/null || return 1; done
  fi
  if [ -f "$PIDS/tcp_relay.pid" ]; then # with the monitoring stack: all of it too
    for c in "${MON_COMPONENTS[@]}"; do live_pid "$c" >/dev/null || return 1; done
  fi
  apiserver_ready
}

# Sign a key pair with the cluster CA.
sign() { # name subject ext-usage [sans]
  local name="$1" subj="$2" usage="$3" sans="${4:-}" ext
  ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage"
  [ -n "$sans" ] && ext+=$'\n'"subjectAltName=$sans"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" \
    -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 365 -sha256 -out "$PKI/$name.crt" -extfile <(echo "$ext") 2>/dev/null
  rm -f "$PKI/$name.csr"
}

# A kubeconfig for the local cluster with a client cert from $PKI.
kubeconfig() { # out-file client-cert-name user-name
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: n1v1-e2e
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: n1v1-e2e
  context: {cluster: n1v1-e2e, user: $3}
current-context: n1v1-e2e
KC
  chmod 600 "$1"
}

start() { # component binary args...
  local c="$1" bin="$2"
  shift 2
  log "starting $c"
  # setsid: a Ctrl-C in the shell that ran `up` must not take the cluster down with it.
  setsid "$bin" "$@" >>"$LOGS/$c.log" 2>&1 </dev/null &
  local pid=$! i rc
  echo "$pid" >"$PIDS/$c.pid"
  # The exact command, so e2e/cluster/restart can bring a component back as it was.
  printf '%q ' "$bin" "$@" >"$PIDS/$c.cmd"
  # Until the forked shell has exec'd the binary its cmdline is the shell's, which live_pid
  # does not recognise; on a loaded machine that took seconds. So "alive" here is the
  # process existing, and a death is reported with its exit status (from wait: the binary
  # is our child), never inferred from a cmdline read mid-exec.
  for i in $(seq 40); do
    [ -d "/proc/$pid" ] || break
    [ "$i" -gt 3 ] && live_pid "$c" >/dev/null && break
    sleep 0.1
  done
  if ! kill -0 "$pid" 2>/dev/null || [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    log "$c exited at once (exit status $rc$([ "$rc" -gt 128 ] && echo ", signal $((rc - 128))")); last log lines:"
    tail -n 20 "$LOGS/$c.log" >&2 || true
    return 1
  fi
  live_pid "$c" >/dev/null || log "$c (pid $pid) is still starting"
}


# Stop one component we started: SIGTERM, up to 10 s, then SIGKILL.
stop_component() { # component
  local pid
  if pid="$(live_pid "$1")"; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$1.pid"
}

# Health check of one control-plane component, for restart (and anyone waiting on one).
component_ready() { # component
  case "$1" in
    etcd) curl -sf "http://127.0.0.1:$ETCD_PORT/health" ;;
    kube-apiserver) apiserver_ready ;;
    *) live_pid "$1" ;;
  esac
}

# shellcheck source=node.sh
source "$HERE/node.sh"
# shellcheck source=monitoring.sh
source "$HERE/monitoring.sh"
