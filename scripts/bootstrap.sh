#!/usr/bin/env bash
# Creates .venv and installs the project with every extra; re-runs pip only when
# pyproject.toml changed, so warm runs cost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.n1v1-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[bootstrap] pip install -e .[runtime,operator,dev]"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[runtime,operator,dev]'
  touch "$stamp"
fi
