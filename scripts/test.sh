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
echo "[test] unit tests (no cluster)"
.venv/bin/pytest -q tests
# --- e2e: local control plane (see e2e/cluster/README.md) ---
if [ -x e2e/cluster/up ]; then
  trap 'e2e/cluster/down || true' EXIT
  e2e/cluster/up
  echo "[test] e2e tests"
  .venv/bin/pytest -q e2e
fi
