"""Command-line tools around the runtime: `fetch` (the init container that downloads and
verifies a model folder; imports neither numpy nor a framework), `save` (write a model
folder from an estimator file) and `demo` (the README's first command)."""
