"""Fixtures for tests that run the runtime image in real pods the operator creates.

They need a node whose kubelet runs containers, labelled ``n1v1.io/node=real`` (the local
cluster's real node from e2e/cluster/node.sh; on kind, e2e/kind/run-e2e.sh labels the worker),
and the address at which pods reach the test host in ``N1V1_POD_HOST_IP`` (written to
e2e/.state/env by `up`). Without either, the tests fail: they never skip.

- ``real_node`` (session): the node's name.
- ``pod_host_ip`` (session): where model sources served by the test host listen.
- ``model_site`` (function): an HTTP server on that address serving a temp folder.
- ``https_model_site`` (function): the same over HTTPS with a private CA, and the CA's PEM.
- ``on_real_node(body)``: an MLModel manifest placed on the real node, sized for 2 cores.
- ``realpods``: an MLModels helper (e2e/operator) with the chart's operator running.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import free_port
from e2e.mlmodels import MLModels
from e2e.realpods.cluster import REAL_NODE_LABEL, place_on_real_node
from tests.support.tls_support import self_signed, server_context


@pytest.fixture(scope="session")
def real_node(k8s: Any) -> str:
    key, value = REAL_NODE_LABEL
    nodes = k8s.core.list_node(label_selector=f"{key}={value}").items
    if not nodes:
        pytest.fail(f"no node labelled {key}={value}: these tests need a kubelet that runs "
                    "containers (e2e/cluster/up starts one as root)", pytrace=False)
    return nodes[0].metadata.name


@pytest.fixture(scope="session")
def pod_host_ip() -> str:
    ip = os.environ.get("N1V1_POD_HOST_IP")
    if not ip:
        pytest.fail("N1V1_POD_HOST_IP is not set: source e2e/.state/env (the address at which "
                    "pods reach the test host)", pytrace=False)
    return ip


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output readable
        pass


class ModelSite:
    """A folder served at http(s)://<pod_host_ip>:<port>/ for fetch init containers; with
    `tls` (certificate, key) over HTTPS."""

    def __init__(self, root: Path, host: str, tls: tuple[Path, Path] | None = None) -> None:
        self.root = root
        handler = lambda *a, **kw: _Quiet(*a, directory=str(root), **kw)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer((host, free_port()), handler)
        if tls:
            self.server.socket = server_context(*tls).wrap_socket(self.server.socket,
                                                                  server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def model_site(pod_host_ip: str, tmp_path: Path) -> Iterator[ModelSite]:
    root = tmp_path / "site"
    root.mkdir()
    site = ModelSite(root, pod_host_ip)
    yield site
    site.close()


@pytest.fixture
def https_model_site(pod_host_ip: str, tmp_path: Path) -> Iterator[tuple[ModelSite, Path]]:
    """(site over HTTPS with a private CA's certificate, that CA's PEM)."""
    root = tmp_path / "tls-site"
    root.mkdir()
    cert, key = self_signed(tmp_path, pod_host_ip)
    site = ModelSite(root, pod_host_ip, (cert, key))
    yield site, cert
    site.close()


@pytest.fixture
def on_real_node(real_node: str) -> Callable[..., dict[str, Any]]:
    return place_on_real_node


@pytest.fixture
def realpods(run_operator: Callable[..., Any], operator_kubeconfig: Path, kubeconfig: Path,
             k8s: Any, namespace: str) -> MLModels:
    """MLModels in a fresh namespace, reconciled by the operator running as the chart's SA."""
    run_operator(namespace)
    return MLModels(kubeconfig, k8s, namespace)
