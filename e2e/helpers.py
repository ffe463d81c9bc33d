"""Helpers shared by every e2e test (cluster, operator, chart, images).

Everything here works against any kubeconfig: the local control plane from
``e2e/cluster/up`` or a kind cluster. Import as ``from e2e.helpers import ...``.

Main entry points:
- :func:`resolve_kubeconfig` - the kubeconfig the suite uses (``KUBECONFIG`` or
  ``e2e/.state/kubeconfig``), checked to be reachable.
- :func:`run`, :func:`kubectl`, :func:`helm`, :func:`promtool` - run a tool; a failure raises
  :class:`CommandError` carrying the command line, exit code, stdout and stderr.
- :func:`wait_for` - poll a predicate; on timeout fail with the last observed state.
- :func:`serviceaccount_kubeconfig` - a kubeconfig that authenticates as a ServiceAccount
  (token from ``kubectl create token``), for RBAC tests.
- :func:`api_clients` - typed ``kubernetes`` client APIs bound to one kubeconfig.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent
STATE_DIR = E2E_DIR / ".state"
LOCAL_KUBECONFIG = STATE_DIR / "kubeconfig"
CLUSTER_DIR = E2E_DIR / "cluster"

T = TypeVar("T")


class CommandError(AssertionError):
    """A tool exited non-zero. An AssertionError so pytest reports it as a test failure."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed (exit {returncode}): {' '.join(self.cmd)}\n"
            f"--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}"
        )


class ClusterUnavailable(RuntimeError):
    """No reachable cluster behind the kubeconfig the suite would use."""


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


# ---------------------------------------------------------------- tools and environment


def _cluster_versions() -> dict[str, str]:
    """KEY=value pairs of e2e/cluster/versions.sh (the single place versions are pinned)."""
    versions: dict[str, str] = {}
    for line in (CLUSTER_DIR / "versions.sh").read_text().splitlines():
        m = re.match(r"^([A-Z_]+)=(\S+)", line)
        if m:
            versions[m.group(1)] = m.group(2)
    return versions


def tool_dirs() -> list[Path]:
    """Cache folders holding kubectl, kwok, helm and promtool built by e2e/cluster/build."""
    v = _cluster_versions()
    cache = Path(os.environ.get("N1V1_CACHE", Path.home() / ".cache" / "n1v1")) / "bin"
    return [
        cache / f"kubectl-{v['KUBERNETES_VERSION']}",
        cache / f"kwok-{v['KWOK_VERSION']}",
        cache / f"helm-{v['HELM_VERSION']}",
        cache / f"promtool-{v['PROMETHEUS_VERSION']}",
    ]


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ with the cached tool folders (when built) in front of PATH.

    The pinned, cached versions win over whatever kubectl/helm the machine has; a kind user
    who never ran e2e/cluster/build gets the tools from their own PATH.
    """
    env = dict(os.environ)
    existing = [str(d) for d in tool_dirs() if d.is_dir()]
    env["PATH"] = os.pathsep.join([*existing, env.get("PATH", "")])
    if extra:
        env.update(extra)
    return env


def which(tool: str) -> str:
    """Absolute path of a tool on :func:`tool_env`'s PATH; fails with a hint if missing."""
    found = shutil.which(tool, path=tool_env()["PATH"])
    if not found:
        raise AssertionError(
            f"{tool} not found on PATH or in the n1v1 cache; run e2e/cluster/build "
            "(or e2e/cluster/up) to build it"
        )
    return found


def run(
    cmd: Sequence[str],
    *,
    input: str | None = None,  # noqa: A002 - mirrors subprocess.run
    check: bool = True,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with text I/O captured; raise :class:`CommandError` if it fails.

    ``check=False`` returns the result whatever the exit code (for expected failures).
    """
    cmd = [str(c) for c in cmd]
    try:
        result = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(env),
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            cmd, -1, str(exc.stdout or ""), f"timed out after {timeout}s\n{exc.stderr or ''}"
        ) from exc
    if check and result.returncode != 0:
        raise CommandError(cmd, result.returncode, result.stdout, result.stderr)
    return result


def kubectl(
    *args: str, kubeconfig: str | Path, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``kubectl --kubeconfig <kubeconfig> args...`` (keyword arguments as for :func:`run`)."""
    return run([which("kubectl"), "--kubeconfig", str(kubeconfig), *args], **kwargs)


def helm(*args: str, kubeconfig: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``helm --kubeconfig <kubeconfig> args...`` (keyword arguments as for :func:`run`)."""
    return run([which("helm"), "--kubeconfig", str(kubeconfig), *args], **kwargs)


def promtool(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``promtool args...`` (keyword arguments as for :func:`run`)."""
    return run([which("promtool"), *args], **kwargs)


def apply_manifest(
    manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    kubeconfig: str | Path,
    namespace: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``kubectl apply -f -`` for YAML text, one object (dict) or a list of objects."""
    if not isinstance(manifest, str):
        docs = [manifest] if isinstance(manifest, Mapping) else list(manifest)
        manifest = yaml.safe_dump_all(docs)
    ns = ["-n", namespace] if namespace else []
    return kubectl("apply", *ns, "-f", "-", kubeconfig=kubeconfig, input=manifest)


# ---------------------------------------------------------------- waiting


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 60,
    describe: str = "condition",
    interval: float = 0.5,
    observe: Callable[[], Any] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    On timeout raise AssertionError naming ``describe`` and the last observed state: the
    predicate's last return value or exception, plus ``observe()`` if given (e.g. a
    ``kubectl get -o yaml`` of the object), so a failure says what the cluster looked like.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    attempts = 0
    while True:
        attempts += 1
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - a failing probe is an observation too
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    observed = f"last observed: {last!r}"
    if observe is not None:
        try:
            observed += f"\nstate: {observe()}"
        except Exception as exc:  # noqa: BLE001
            observed += f"\n(observe() failed: {exc!r})"
    raise AssertionError(
        f"timed out after {timeout}s ({attempts} checks) waiting for {describe}\n{_tail(observed)}"
    )


# ---------------------------------------------------------------- local processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz_ok(port: int) -> bool:
    """True when ``http://127.0.0.1:<port>/healthz`` answers 200 (an operator's liveness)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- cluster access


def unique_name(prefix: str) -> str:
    """A DNS-1123 name ``<prefix>-<6 hex>``, at most 63 characters."""
    prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:52] or "e2e"
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def resolve_kubeconfig() -> Path:
    """The kubeconfig under test: ``$KUBECONFIG`` if set, else ``e2e/.state/kubeconfig``.

    Raises :class:`ClusterUnavailable` with instructions when the file is missing or the API
    server behind it does not answer ``/readyz``.
    """
    env_value = os.environ.get("KUBECONFIG", "")
    # KUBECONFIG may list several files; the first that exists is the one kubectl starts from.
    candidates = [Path(p) for p in env_value.split(os.pathsep) if p]
    chosen = next((p for p in candidates if p.is_file()), None)
    source = "KUBECONFIG"
    if chosen is None:
        chosen, source = LOCAL_KUBECONFIG, "e2e/.state/kubeconfig"
    how = (
        "Start the local cluster with `e2e/cluster/up` (builds binaries on first use) and "
        "`source e2e/.state/env`, or point KUBECONFIG at a running cluster (kind: "
        "e2e/kind/run-e2e.sh)."
    )
    if not chosen.is_file():
        raise ClusterUnavailable(f"no kubeconfig at {chosen} (from {source}). {how}")
    result = kubectl(
        "get", "--raw", "/readyz", kubeconfig=chosen, check=False, timeout=20
    )
    if result.returncode != 0 or result.stdout.strip() != "ok":
        raise ClusterUnavailable(
            f"the cluster in {chosen} (from {source}) is not ready: "
            f"{(result.stderr or result.stdout).strip()[:500]}. {how}"
        )
    return chosen


@dataclass(frozen=True)
class ApiClients:
    """Typed ``kubernetes`` APIs sharing one ApiClient (one kubeconfig, one identity)."""

    api_client: Any
    core: Any  # CoreV1Api
    apps: Any  # AppsV1Api
    rbac: Any  # RbacAuthorizationV1Api
    autoscaling: Any  # AutoscalingV2Api
    custom: Any  # CustomObjectsApi
    apiextensions: Any  # ApiextensionsV1Api


def api_clients(kubeconfig: str | Path) -> ApiClients:
    """Build :class:`ApiClients` for ``kubeconfig`` (its current context)."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    return ApiClients(
        api_client=api,
        core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api),
        rbac=client.RbacAuthorizationV1Api(api),
        autoscaling=client.AutoscalingV2Api(api),
        custom=client.CustomObjectsApi(api),
        apiextensions=client.ApiextensionsV1Api(api),
    )


def serviceaccount_kubeconfig(
    kubeconfig: str | Path,
    namespace: str,
    serviceaccount: str,
    dest: str | Path,
    duration: str = "1h",
) -> Path:
    """Write to ``dest`` a kubeconfig that authenticates as ``namespace/serviceaccount``.

    The token comes from ``kubectl create token`` (TokenRequest API, so the cluster's real
    service-account signing and authentication are exercised); the server and CA are copied
    from ``kubeconfig``'s current context. The ServiceAccount must already exist.
    """
    raw = kubectl(
        "config", "view", "--raw", "--minify", "--flatten", "-o", "json", kubeconfig=kubeconfig
    ).stdout
    admin = yaml.safe_load(raw)
    cluster = admin["clusters"][0]["cluster"]
    token = kubectl(
        "create", "token", serviceaccount, "-n", namespace, f"--duration={duration}",
        kubeconfig=kubeconfig,
    ).stdout.strip()
    user = f"system:serviceaccount:{namespace}:{serviceaccount}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "e2e", "context": {"cluster": "e2e", "user": user, "namespace": namespace}}
        ],
        "current-context": "e2e",
    }
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(doc))
    dest.chmod(0o600)
    return dest
