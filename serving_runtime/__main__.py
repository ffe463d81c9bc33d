"""`python -m serving_runtime [--models-dir DIR] [--port 8000] ...` serves models;
`python -m serving_runtime save ...` writes a model folder. Flags override the
environment variables of the same name (docs/contracts.md)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

ENV_OF_FLAG = {
    "models_dir": "MODELS_DIR",
    "preload_models": "PRELOAD_MODELS",
    "host": "HOST",
    "port": "PORT",
    "workers": "WORKERS",
    "inference_threads": "INFERENCE_THREADS",
    "allow_unsafe_loading": "ALLOW_UNSAFE_LOADING",
    "log_level": "LOG_LEVEL",
    "max_body_bytes": "MAX_BODY_BYTES",
    "fast_path": "FAST_PATH",
    "fast_path_check_rows": "FAST_PATH_CHECK_ROWS",
    "shed_lag_ms": "SHED_LAG_MS",
    "header_timeout_seconds": "HEADER_TIMEOUT_SECONDS",
    "body_timeout_seconds": "BODY_TIMEOUT_SECONDS",
    "max_connections_per_worker": "MAX_CONNECTIONS_PER_WORKER",
    "drain_seconds": "DRAIN_SECONDS",
    "exit_on_load_failure": "EXIT_ON_LOAD_FAILURE",
    "termination_message_path": "TERMINATION_MESSAGE_PATH",
    "max_artifact_bytes": "MAX_ARTIFACT_BYTES",
}


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving_runtime",
        description="Serve the models in a models directory over HTTP (native API, Open "
        "Inference Protocol v2, /health, /metrics). `python -m serving_runtime save --help` "
        "writes a model folder.",
    )
    p.add_argument("--models-dir", help="folder of model folders (MODELS_DIR)")
    p.add_argument("--preload-models",
                   help="comma-separated names loaded before ready; default every folder")
    p.add_argument("--host", help="listen address (HOST, default 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (PORT, default 8000)")
    p.add_argument("--workers", type=int, help="server processes (WORKERS, default 1)")
    p.add_argument("--inference-threads", type=int,
                   help="per-process inference threads (default: CPUs available)")
    p.add_argument("--allow-unsafe-loading", action="store_const", const=True,
                   help="permit joblib/pickle artifacts (ALLOW_UNSAFE_LOADING)")
    p.add_argument("--log-level", help="critical|error|warning|info|debug (LOG_LEVEL)")
    p.add_argument("--max-body-bytes", type=int,
                   help="larger request bodies get 413 (MAX_BODY_BYTES)")
    p.add_argument("--fast-path", action=argparse.BooleanOptionalAction, default=None,
                   help="compiled tree evaluator when it agrees with the framework "
                   "(FAST_PATH, default on)")
    p.add_argument("--fast-path-check-rows", type=int,
                   help="rows of the load-time agreement check (FAST_PATH_CHECK_ROWS, 2000)")
    p.add_argument("--shed-lag-ms", type=float,
                   help="503 + Retry-After while the event loop is this late; 0 = never "
                   "(SHED_LAG_MS, default 50)")
    p.add_argument("--header-timeout-seconds", type=float,
                   help="408 and close when a request head takes longer "
                   "(HEADER_TIMEOUT_SECONDS, default 10)")
    p.add_argument("--body-timeout-seconds", type=float,
                   help="408 and close when a body is not in this long after its head "
                   "(BODY_TIMEOUT_SECONDS, default 30)")
    p.add_argument("--max-connections-per-worker", type=int,
                   help="beyond this many open connections a worker answers new ones 503 "
                   "(MAX_CONNECTIONS_PER_WORKER, default 512)")
    p.add_argument("--drain-seconds", type=float,
                   help="after SIGTERM, answer (not ready, Connection: close) this long at "
                   "most before closing idle connections and exiting (DRAIN_SECONDS, 10)")
    p.add_argument("--exit-on-load-failure", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="exit 3 when an expected model fails to load at start-up, reason in "
                   "the termination message (EXIT_ON_LOAD_FAILURE, default off)")
    p.add_argument("--termination-message-path",
                   help="file for that reason (TERMINATION_MESSAGE_PATH, "
                   "default /dev/termination-log)")
    p.add_argument("--max-artifact-bytes", type=int,
                   help="larger model artifacts are refused from their size, unread "
                   "(MAX_ARTIFACT_BYTES, default 2147483648 = 2 GiB)")
    p.add_argument("--auth-tokens-dir",
                   help="folder of accepted bearer tokens, one per file (AUTH_TOKENS_DIR; "
                   "unset = no authentication)")
    p.add_argument("--auth-health", choices=("open", "token"),
                   help="whether health endpoints need the token (AUTH_HEALTH, default open)")
    p.add_argument("--auth-metrics", choices=("open", "token"),
                   help="whether /metrics needs the token (AUTH_METRICS, default open)")
    p.add_argument("--tls-cert-file", help="PEM certificate: HTTPS and gRPC TLS (TLS_CERT_FILE)")
    p.add_argument("--tls-key-file", help="PEM key of --tls-cert-file (TLS_KEY_FILE)")
    return p


def http_protocol() -> Any:
    """uvicorn's `http=`: the protocol that sends a response in one write
    (serving_runtime/server/http_protocol.py), or uvicorn's default where httptools,
    which it builds on, is not installed."""
    if importlib.util.find_spec("httptools") is None:
        logging.getLogger("serving_runtime").warning(
            "httptools is not installed: serving with uvicorn's default HTTP protocol "
            "(two writes per response, slower; no HEADER_TIMEOUT_SECONDS, "
            "BODY_TIMEOUT_SECONDS or MAX_CONNECTIONS_PER_WORKER)")
        return "auto"
    from serving_runtime.server.http_protocol import CoalescingHttpToolsProtocol

    return CoalescingHttpToolsProtocol


def serve(argv: Sequence[str]) -> int:
    args = serve_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}

    from pydantic import ValidationError

    from serving_runtime.server.settings import Settings

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    common = dict(host=settings.host, port=settings.port, log_config=None, access_log=False,
                  log_level=settings.log_level, server_header=False, http=http_protocol())
    from serving_runtime.server import uvicorn_server as server

    if settings.workers == 1:
        from serving_runtime.server.app import create_app
        from serving_runtime.server.hot_path import with_hot_path

        # hot routes skip FastAPI's router (same handlers; serving_runtime/server/hot_path.py)
        return server.run_single(with_hot_path(create_app(settings)),
                                 drain_seconds=settings.drain_seconds, settings=settings,
                                 **common)
    if "inference_threads" not in overrides and "INFERENCE_THREADS" not in os.environ:
        # the CPUs are shared by the worker processes: no oversubscription by default
        from serving_runtime.server.settings import available_cpus

        settings.inference_threads = max(1, available_cpus() // settings.workers)
    # Worker processes rebuild the settings from the environment: hand them the flags.
    for field, env in ENV_OF_FLAG.items():
        os.environ[env] = str(getattr(settings, field))
    state = tempfile.mkdtemp(prefix="n1v1-serving-")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(state, "metrics"))
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    os.environ["N1V1_RELOAD_DIR"] = os.path.join(state, "reload")
    os.makedirs(os.environ["N1V1_RELOAD_DIR"], exist_ok=True)
    return server.run_workers("serving_runtime.server.app:create_app_from_env",
                              workers=settings.workers, **common)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "save":
        from serving_runtime.tools import save as cli_save

        p = argparse.ArgumentParser(prog="python -m serving_runtime")
        cli_save.add_parser(p.add_subparsers(dest="command", required=True))
        return cli_save.run(p.parse_args(argv))
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
