"""Pods that call other pods, on the real node: the runtime image's Python as a client
(one request, or a poll that times how long a change takes to show). The NetworkPolicy
tests of the cluster and of the operator share them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.helpers import ApiClients, apply_manifest, kubectl, tool_env, wait_for, which
from e2e.realpods.cluster import REAL_NODE_LABEL, REAL_NODE_TOLERATION, RUNTIME_IMAGE

PORT = 8080
# One request from inside a pod: "ok" (HTTP 200), "http <status>" (the server answered,
# so the network let it through), or "refused: <error>" (no connection). A policy's REJECT
# answers at once (connection refused); the 2 s timeout bounds a DROP.
REQUEST = r"""
import sys, urllib.error, urllib.request
try:
    status = urllib.request.urlopen(sys.argv[1], timeout=2).status
    print("ok" if status == 200 else f"http {status}")
except urllib.error.HTTPError as exc:
    print(f"http {exc.code}")
except OSError as exc:
    print(f"refused: {exc!r}")
"""
# Polls until the answer becomes `want` ("ok", "refused" or "http <status>"), for at most
# `limit` seconds; prints "started", then the wall-clock time (the host's clock: same kernel)
# it changed.
WATCH = r"""
import sys, time, urllib.error, urllib.request
url, want, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
print("started", flush=True)
end = time.time() + limit
while True:
    try:
        status = urllib.request.urlopen(url, timeout=1).status
        got = "ok" if status == 200 else f"http {status}"
    except urllib.error.HTTPError as exc:
        got = f"http {exc.code}"
    except OSError:
        got = "refused"
    if got == want:
        print(time.time(), flush=True)
        sys.exit(0)
    if time.time() > end:
        print(f"still {got} after {limit}s", flush=True)
        sys.exit(1)
    time.sleep(0.05)
"""
SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def pod(name: str, labels: dict[str, str], command: list[str], *,
        probes: bool = False) -> dict[str, Any]:
    """A runtime-image pod on the real node, non-root with a read-only root FS."""
    container: dict[str, Any] = {
        "name": "main", "image": RUNTIME_IMAGE, "imagePullPolicy": "Never",
        "command": command, "securityContext": SECURITY,
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                      "limits": {"cpu": "500m", "memory": "128Mi"}},
    }
    if probes:
        container["ports"] = [{"name": "http", "containerPort": PORT}]
        probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1,
                 "timeoutSeconds": 1, "failureThreshold": 1}
        container["readinessProbe"] = probe
        container["livenessProbe"] = probe
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]},
            "tolerations": [REAL_NODE_TOLERATION],
            "terminationGracePeriodSeconds": 1,  # sleep/http.server as PID 1 ignore SIGTERM
            "automountServiceAccountToken": False,
            "containers": [container],
        },
    }


def client(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod that only sleeps: requests run in it with `kubectl exec`."""
    return pod(name, labels or {"role": "client"}, ["sleep", "3600"])


class Pods:
    """Pods of one test, the admin's kubeconfig and API clients."""

    def __init__(self, kubeconfig: Path, k8s: ApiClients) -> None:
        self.kubeconfig, self.k8s = kubeconfig, k8s

    def create(self, namespace: str, *objects: dict[str, Any]) -> None:
        apply_manifest(list(objects), kubeconfig=self.kubeconfig, namespace=namespace)

    def wait_ready(self, namespace: str, name: str, timeout: float = 90) -> str:
        """The pod's IP once Ready (the image is imported: seconds)."""
        def ready() -> str | None:
            p = self.k8s.core.read_namespaced_pod(name, namespace)
            ok = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            return p.status.pod_ip if ok else None
        return wait_for(ready, timeout=timeout, describe=f"pod {namespace}/{name} Ready",
                        observe=lambda: self.k8s.core.read_namespaced_pod(name, namespace).status)

    def request(self, namespace: str, name: str, url: str) -> str:
        """One request from that pod: "ok" or "refused: <error>"; bounded, and timed."""
        start = time.monotonic()
        out = kubectl("exec", "-n", namespace, name, "--", "python", "-c", REQUEST, url,
                      kubeconfig=self.kubeconfig, timeout=30).stdout.strip()
        took = time.monotonic() - start
        # The request itself is bounded by its 2 s timeout; exec adds well under a second
        # on an idle node, more on a loaded one.
        assert took < 15, f"request from {namespace}/{name} took {took:.1f}s"
        return out

    def assert_answers(self, namespace: str, name: str, *urls: str) -> None:
        for url in urls:
            got = self.request(namespace, name, url)
            assert got == "ok", f"{namespace}/{name} -> {url}: {got}"

    def assert_refused(self, namespace: str, name: str, *urls: str) -> None:
        for url in urls:
            got = self.request(namespace, name, url)
            assert got.startswith("refused"), f"{namespace}/{name} -> {url}: {got}"

    def change_and_time(self, namespace: str, name: str, url: str, want: str,
                        change: Callable[[], None], limit: float = 30) -> float:
        """Seconds from the start of `change()` until `url`, polled from inside the pod every
        50 ms, gives `want`: what a policy change takes to be enforced."""
        cmd = [which("kubectl"), "--kubeconfig", str(self.kubeconfig), "exec", "-n", namespace,
               name, "--", "python", "-c", WATCH, url, want, str(limit)]
        watch = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=tool_env())
        try:
            assert watch.stdout is not None
            first = watch.stdout.readline().strip()
            assert first == "started", f"watcher did not start: {first!r} {watch.stderr.read()}"
            t0 = time.time()
            change()
            out, err = watch.communicate(timeout=limit + 30)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
        assert watch.returncode == 0, f"{namespace}/{name} -> {url} never {want}: {out} {err}"
        return float(out.strip()) - t0
