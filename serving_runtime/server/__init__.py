"""The HTTP server: app factory, route table, data-plane handlers, the raw-ASGI hot path
and its HTTP/1.1 protocol, body reading, the model registry, metrics, logs, reload
broadcast between workers, and the uvicorn process runner. It depends on `models`, never
the other way round."""
