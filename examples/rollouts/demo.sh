#!/usr/bin/env bash
# A canary, then a shadow, of the iris pair that train.py writes (docs/rollouts.md).
# Run from the repository root: examples/rollouts/demo.sh
set -euo pipefail
PY="${PY:-.venv/bin/python}"
PORT="${PORT:-8124}"
MODELS="$(mktemp -d)/models"
F='"features": {"sepal_length": [5.1], "sepal_width": [3.5], "petal_length": [1.4], "petal_width": [0.2]}'
"$PY" examples/rollouts/train.py "$MODELS"

serve() { # CHALLENGERS log
  CHALLENGERS="$1" "$PY" -m serving_runtime --models-dir "$MODELS" --port "$PORT" >"$2" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && return
    sleep 0.3
  done
  echo "runtime not ready; see $2" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; }

echo "--- canary: 10% of correlation ids meet 1.1.0"
serve '{"iris": {"mode": "canary", "weight": 10}}' "$MODELS/../canary.log"
for i in $(seq 1 1000); do
  curl -s -X POST "http://127.0.0.1:$PORT/predict" -o /dev/null \
    -d "{\"model_name\": \"iris\", \"correlation_id\": \"order-$i\", $F}"
done
for id in order-1 order-10; do
  curl -s -X POST "http://127.0.0.1:$PORT/predict" -d "{\"model_name\": \"iris\", \"correlation_id\": \"$id\", $F}"
  echo
done
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^rollout_(requests_total|challenger_serving)'
stop

echo "--- shadow: every row evaluated by 1.1.0 after the answer, never returned"
serve '{"iris": {"mode": "shadow"}}' "$MODELS/../shadow.log"
"$PY" - "$PORT" <<'PYEOF'
import sys
import httpx
from sklearn.datasets import load_iris
names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
with httpx.Client(base_url=f"http://127.0.0.1:{sys.argv[1]}") as c:
    versions = {c.post("/predict", json={"model_name": "iris", "features": {
        n: [float(v)] for n, v in zip(names, row)}}).json()["model_version"]
        for row in load_iris().data}
print(f"150 answers, versions {sorted(versions)}")
PYEOF
sleep 1
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^shadow_(rows_total|disagreements_total|delta_count)|^shadow_delta_bucket\{le="0.01"'
stop
