.PHONY: venv demo test lint unit e2e cluster-up cluster-down bench

venv:
	@scripts/bootstrap.sh

# Main job: train a small scikit-learn and a small XGBoost model, serve them, print a curl.
demo: venv
	.venv/bin/python -m serving_runtime.demo

# Everything CI runs.
test:
	@scripts/test.sh

lint: venv
	.venv/bin/ruff check .

unit: venv
	.venv/bin/pytest -q tests

cluster-up:
	e2e/cluster/up

cluster-down:
	e2e/cluster/down

e2e: venv
	.venv/bin/pytest -q e2e
