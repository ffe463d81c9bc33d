#!/usr/bin/env bash
# The project's one test command (README: `make test`; .ci/run runs exactly this).
# Order: cheap checks first, then the local Kubernetes control plane (built once from
# upstream sources and cached), then the e2e suite; the cluster is torn down on exit
# whether tests pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "[test] ruff"
.venv/bin/ruff check .
echo "[test] mypy"
.venv/bin/mypy
echo "[test] chart CRD copy matches crds/"
.venv/bin/python scripts/gen_chart_crd.py --check
echo "[test] docs/crd-reference.md matches crds/"
.venv/bin/python scripts/crd_reference.py --check
echo "[test] the gRPC descriptor matches its .proto"
.venv/bin/python scripts/gen_grpc_descriptor.py --check
# tests/chart renders the chart with the pinned helm before any cluster exists.
e2e/cluster/build helm
# tests/tools/test_demo.py runs the curl commands `make demo` prints.
command -v curl >/dev/null || (source images/lib.sh && apt_install curl)
echo "[test] unit tests (no cluster)"
.venv/bin/pytest -q tests
# --- container images (docs/development.md, "Container images"): installs and starts a Docker engine if
# none answers, makes the local base image, builds both images; the e2e/images tests run
# them. Cached: a warm run only checks.
echo "[test] container images"
images/build.sh
# --- e2e: local control plane (see e2e/cluster/README.md) ---
if [ -x e2e/cluster/up ]; then
  if e2e/cluster/status 2>/dev/null; then
    # Someone's dev cluster in this checkout: use it and leave it running.
    echo "[test] reusing the running local cluster (not stopped afterwards)"
  else
    # Started here, so stopped here whatever happens; on failure keep the component logs.
    # The real node changes host state (iptables, bridge, routes, mounts, cgroups, sysctls):
    # a snapshot before `up` is compared after `down`, and any difference fails the run.
    # First what a run killed without `down` left (here or in another checkout): `up` would
    # clean it after the snapshot, and the check would count that as a difference.
    e2e/cluster/down
    host_before="$(mktemp)"
    .venv/bin/python e2e/cluster/host_state.py save "$host_before"
    trap 'rc=$?; if [ $rc -ne 0 ]; then export N1V1_KEEP_LOGS=1; fi
          e2e/cluster/down || true
          echo "[test] host state after down"
          .venv/bin/python e2e/cluster/host_state.py check "$host_before" || rc=1
          [ $rc -ne 0 ] && echo "[test] failed; control-plane logs kept in e2e/.state/logs/"
          exit $rc' EXIT
  fi
  e2e/cluster/up
  echo "[test] e2e tests"
  # Always the local cluster: never a KUBECONFIG the caller happens to have exported. The env
  # file also says where pods reach this host (N1V1_POD_HOST_IP, for e2e/realpods).
  # shellcheck source=/dev/null
  (source e2e/.state/env && KUBECONFIG="$PWD/e2e/.state/kubeconfig" .venv/bin/pytest -q e2e)
fi
