.PHONY: venv demo test lint unit e2e cluster-up cluster-down cluster-demo bench

venv:
	@scripts/bootstrap.sh

# Main job: train a small scikit-learn and a small XGBoost model, serve them, print a curl.
demo: venv
	.venv/bin/python -m serving_runtime.tools.demo

# Everything CI runs.
test:
	@scripts/test.sh

lint: venv
	.venv/bin/ruff check .
	.venv/bin/mypy

unit: venv
	.venv/bin/pytest -q tests

cluster-up:
	e2e/cluster/up

cluster-down:
	@if [ -f e2e/.state/pids/demo-operator.pid ]; then kill "$$(cat e2e/.state/pids/demo-operator.pid)" 2>/dev/null || true; fi
	e2e/cluster/down

# The whole product on the local cluster: real node, chart, an MLModel, a curl that works.
cluster-demo:
	@scripts/cluster_demo.sh

e2e: venv
	.venv/bin/pytest -q e2e
