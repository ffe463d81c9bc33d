"""The operator at scale: N MLModels across 10 namespaces on kwok nodes (issue 18).

Starts its own local control plane (e2e/cluster/up, no real node, no monitoring stack) on
port base 26400 with an audit log of the operator's ServiceAccount, adds kwok nodes (110 pods
each) until every pod fits, runs `python -m mlmodel_operator` cluster-wide as that
ServiceAccount, and measures:

- apply -> every child written (Deployment, Service, alert ConfigMap) and status Ready, per
  MLModel (p50, p95, max), with the cluster's own share (Deployment written -> available);
- one spec change -> its Deployment updated (p95), changes made one after another;
- operator RSS and CPU (idle, after converging, steady state);
- API requests per MLModel at steady state and per resync, at N and N/2 MLModels (linear
  growth means the per-MLModel figure stays put), from the API server's audit log.

    .venv/bin/python bench/operator_scale.py            # 1,000 MLModels, ~6 min
    .venv/bin/python bench/operator_scale.py --models 300 --keep   # leave the cluster up

The controller-manager and scheduler get higher client QPS than their defaults (20 and 50):
with the defaults the control plane itself needs minutes to make 1,000 ReplicaSets and pods,
and the benchmark would time Kubernetes rather than the operator.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from e2e.helpers import free_port, healthz_ok, kubectl, serviceaccount_kubeconfig  # noqa: E402

WORK = Path("/tmp/n1v1-opbench")
STATE = WORK / "state"
PORT_BASE = 26400
NAMESPACES = 10
PODS_PER_NODE = 110
SA_NS, SA = "n1v1-opbench", "operator"
OPERATOR_USER = f"system:serviceaccount:{SA_NS}:{SA}"
MANAGED = "app.kubernetes.io/managed-by=n1v1-mlmodel-operator"
GOALS = {"converge_s": 60.0, "rss_mb": 150.0}

AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["{OPERATOR_USER}"]
- level: None
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cluster_env(extra_kcm: str = "") -> dict[str, str]:
    audit = WORK / "audit.log"
    return {
        **os.environ,
        "N1V1_CLUSTER_STATE": str(STATE),
        "N1V1_CLUSTER_PORT_BASE": str(PORT_BASE),
        "N1V1_REAL_NODE": "0",
        "N1V1_MONITORING": "0",
        "N1V1_APISERVER_ARGS": (
            f"--audit-policy-file={WORK / 'audit-policy.yaml'} --audit-log-path={audit} "
            "--audit-log-format=json --audit-log-mode=batch --audit-log-maxsize=0 "
            "--max-requests-inflight=800 --max-mutating-requests-inflight=400 "
            # /debug/pprof on the API server, to see where its CPU goes under this load.
            "--profiling=true"
        ),
        "N1V1_CONTROLLER_MANAGER_ARGS": (
            "--kube-api-qps=400 --kube-api-burst=800 --concurrent-deployment-syncs=10 "
            f"--concurrent-replicaset-syncs=10 {extra_kcm}"
        ),
        "N1V1_SCHEDULER_ARGS": "--kube-api-qps=400 --kube-api-burst=800",
    }


def cluster(cmd: str) -> None:
    subprocess.run([str(REPO / "e2e/cluster" / cmd)], env=cluster_env(), check=True)


# ------------------------------------------------------------------ the operator process


def _die_with_parent() -> None:
    # A killed benchmark must not leave an operator reconciling the next run's cluster.
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Operator:
    def __init__(self, kubeconfig: Path, resync: float) -> None:
        self.health = free_port()
        self.metrics = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "OPERATOR_HEALTH_PORT": str(self.health),
            "OPERATOR_METRICS_PORT": str(self.metrics),
            "OPERATOR_RESYNC_SECONDS": str(resync),
            "PYTHONUNBUFFERED": "1",
            "OPBENCH_ROLE": "operator",  # for profiling hooks that must skip the benchmark
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "operator"), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        self.log = (WORK / "operator.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlmodel_operator"], env=env, cwd=REPO,
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while not healthz_ok(self.health):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"operator did not start: {(WORK / 'operator.log').read_text()}")
            time.sleep(0.3)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ------------------------------------------------------------------ what the cluster shows


class Watcher:
    """Times of the first sighting of each MLModel's children and of Ready, from watches."""

    def __init__(self, api: Any) -> None:
        from kubernetes import client

        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.lock = threading.Lock()
        self.children: dict[tuple[str, str, str], float] = {}  # (kind, ns, name) -> first seen
        self.available: dict[tuple[str, str], float] = {}  # Deployment available
        self.ready: dict[tuple[str, str], float] = {}
        self.env_marks: dict[tuple[str, str], tuple[str, float]] = {}  # BENCH_GEN seen
        self.stop = threading.Event()
        for target in (self._deployments, self._services, self._configmaps, self._mlmodels):
            threading.Thread(target=self._loop, args=(target,), daemon=True).start()

    def _loop(self, target: Any) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            try:
                w = watch.Watch()
                for ev in w.stream(target, timeout_seconds=60, **(
                        {} if target == self._mlmodels else {"label_selector": MANAGED})):
                    self._seen(target, ev)
            except Exception as exc:  # noqa: BLE001 - a dropped watch is restarted
                log(f"watch restarted: {exc!r}"[:200])
                time.sleep(2)

    def _deployments(self, **kw: Any) -> Any:
        return self.apps.list_deployment_for_all_namespaces(**kw)

    def _services(self, **kw: Any) -> Any:
        return self.core.list_service_for_all_namespaces(**kw)

    def _configmaps(self, **kw: Any) -> Any:
        return self.core.list_config_map_for_all_namespaces(**kw)

    def _mlmodels(self, **kw: Any) -> Any:
        return self.custom.list_cluster_custom_object("serving.n1v1.io", "v1alpha1",
                                                      "mlmodels", **kw)

    def _seen(self, target: Any, ev: dict[str, Any]) -> None:
        now = time.monotonic()
        obj = ev["object"]
        if target == self._mlmodels:
            meta, status = obj["metadata"], obj.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or [])
            with self.lock:
                if ready:
                    self.ready.setdefault((meta["namespace"], meta["name"]), now)
            return
        # The wrappers carry no return type, so the watch hands over plain dicts.
        meta = obj["metadata"]
        kind = {self._deployments: "Deployment", self._services: "Service",
                self._configmaps: "ConfigMap"}[target]
        owner = next((r["name"] for r in meta.get("ownerReferences") or []
                      if r.get("controller")), meta["name"])
        ns = meta["namespace"]
        with self.lock:
            if ev["type"] != "DELETED":
                self.children.setdefault((kind, ns, owner), now)
            if kind != "Deployment":
                return
            st = obj.get("status") or {}
            if st.get("availableReplicas") and st.get("observedGeneration") == meta.get(
                    "generation"):
                self.available.setdefault((ns, owner), now)
            env = {e["name"]: e.get("value") for c in obj["spec"]["template"]["spec"][
                "containers"] for e in c.get("env") or []}
            if "BENCH_GEN" in env:
                mark = self.env_marks.get((ns, owner))
                if mark is None or mark[0] != env["BENCH_GEN"]:
                    self.env_marks[(ns, owner)] = (env["BENCH_GEN"], now)


# ------------------------------------------------------------------ the audit log


def audit_requests(since: float, until: float) -> dict[str, int]:
    """The operator's requests received in [since, until) (wall clock), by verb/resource;
    a watch counts once, when it starts."""
    from datetime import datetime

    out: dict[str, int] = {}
    with (WORK / "audit.log").open() as f:
        for line in f:
            e = json.loads(line)
            if e.get("user", {}).get("username") != OPERATOR_USER:
                continue
            started = e["stage"] == "ResponseStarted"
            if e["verb"] == "watch" and not started:
                continue
            if e["verb"] != "watch" and e["stage"] not in ("ResponseComplete", "Panic"):
                continue
            t = datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if not since <= t.timestamp() < until:
                continue
            ref = e.get("objectRef") or {}
            res = ref.get("resource", e.get("requestURI", "?").split("?")[0])
            if ref.get("subresource"):
                res += "/" + ref["subresource"]
            key = f"{e['verb']} {res}"
            out[key] = out.get(key, 0) + 1
    return out


# ------------------------------------------------------------------ the run


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def mlmodel(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.n1v1.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name},
        "spec": {"model": {"framework": "sklearn", "version": "1.0.0",
                           "uri": f"https://models.example.internal/{name}/model.tar.gz"}},
    }


def setup_cluster(n: int) -> tuple[Path, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "audit-policy.yaml").write_text(AUDIT_POLICY)
    cluster("down")
    (WORK / "audit.log").unlink(missing_ok=True)
    t0 = time.monotonic()
    cluster("up")
    log(f"cluster up in {time.monotonic() - t0:.0f}s")
    admin = STATE / "kubeconfig"
    nodes = (n + PODS_PER_NODE - 1) // PODS_PER_NODE
    docs = [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": f"kwok-bench-{i}",
                     "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"kubernetes.io/hostname": f"kwok-bench-{i}", "type": "kwok"}},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": str(PODS_PER_NODE)},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": str(PODS_PER_NODE)}},
    } for i in range(nodes)]
    docs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
             for ns in [SA_NS, *(f"opbench-{i}" for i in range(NAMESPACES))]]
    import yaml

    kubectl("apply", "-f", "-", kubeconfig=admin, input=yaml.safe_dump_all(docs))
    kubectl("apply", "-f", str(REPO / "crds"), kubeconfig=admin)
    kubectl("create", "serviceaccount", SA, "-n", SA_NS, kubeconfig=admin)
    kubectl("create", "clusterrolebinding", "opbench-operator", "--clusterrole=cluster-admin",
            f"--serviceaccount={SA_NS}:{SA}", kubeconfig=admin)
    kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s", kubeconfig=admin)
    kubectl("wait", "--for=condition=Established", "crd/mlmodels.serving.n1v1.io",
            kubeconfig=admin)
    return admin, serviceaccount_kubeconfig(admin, SA_NS, SA, WORK / "operator.kubeconfig", "4h")


def wait_until(pred: Any, timeout: float, what: str, progress: Any = None) -> float:
    t0 = last = time.monotonic()
    while not pred():
        now = time.monotonic()
        if now - t0 > timeout:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}"
                             f"{': ' + progress() if progress else ''}")
        if progress and now - last > 10:
            log(f"  {what}: {progress()}")
            last = now
        time.sleep(0.2)
    return time.monotonic() - t0


def quiet_window(seconds: float) -> tuple[float, float]:
    t0 = time.time()
    time.sleep(seconds)
    return t0, time.time()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=100, help="spec changes, one at a time")
    ap.add_argument("--resync", type=float, default=60.0, help="OPERATOR_RESYNC_SECONDS")
    ap.add_argument("--keep", action="store_true", help="leave the cluster up")
    ap.add_argument("--floor", action="store_true",
                    help="no operator: write the same children directly, to time the cluster")
    args = ap.parse_args()
    from kubernetes import client, config

    admin, sa_config = setup_cluster(args.models)
    if args.floor:
        return floor(admin, args.models, args.keep)
    api = config.new_client_from_config(config_file=str(admin))
    api.configuration.connection_pool_maxsize = 32
    custom = client.CustomObjectsApi(api)
    watcher = Watcher(api)
    op = Operator(sa_config, args.resync)
    time.sleep(3)
    figures: dict[str, Any] = {"models": args.models, "idle_rss_mb": op.rss_mb()}
    try:
        names = [(f"opbench-{i % NAMESPACES}", f"m{i:04d}") for i in range(args.models)]
        applied: dict[tuple[str, str], float] = {}
        cpu0, t_start = op.cpu_s(), time.monotonic()

        def create(key: tuple[str, str]) -> None:
            custom.create_namespaced_custom_object(
                "serving.n1v1.io", "v1alpha1", key[0], "mlmodels", mlmodel(key[1]))
            applied[key] = time.monotonic()

        log(f"applying {args.models} MLModels across {NAMESPACES} namespaces")
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, names))
        figures["applied_s"] = time.monotonic() - t_start
        log(f"all applied in {figures['applied_s']:.1f}s")
        kinds = ("Deployment", "Service", "ConfigMap")

        def converged() -> bool:
            with watcher.lock:
                return len(watcher.ready) >= len(names) and all(
                    (k, *key) in watcher.children for key in names for k in kinds)

        def progress() -> str:
            with watcher.lock:
                kinds_seen = {k: sum(1 for c in watcher.children if c[0] == k) for k in kinds}
                return f"Ready {len(watcher.ready)}, children {kinds_seen}"

        wait_until(converged, 900, "every MLModel Ready", progress)
        figures["converge_all_s"] = time.monotonic() - t_start
        figures["converge_cpu_s"] = op.cpu_s() - cpu0
        per_model, written, cluster_share, status_lag = [], [], [], []
        for key in names:
            w = max(watcher.children[(k, *key)] for k in kinds)
            written.append(w - applied[key])
            per_model.append(max(w, watcher.ready[key]) - applied[key])
            if key in watcher.available:
                dep = watcher.children[("Deployment", *key)]
                cluster_share.append(watcher.available[key] - dep)
                status_lag.append(watcher.ready[key] - watcher.available[key])
        figures["converge"] = per_model
        figures["written"] = written
        figures["cluster_share"] = cluster_share
        figures["status_lag"] = status_lag
        figures["converged_rss_mb"] = op.rss_mb()
        log(f"all Ready {figures['converge_all_s']:.1f}s after the first apply")

        # One spec change at a time: apply -> that Deployment's template carries it.
        log(f"{args.changes} spec changes, one after another")
        lat = []
        for key in names[: args.changes]:
            t = time.monotonic()
            custom.patch_namespaced_custom_object(
                "serving.n1v1.io", "v1alpha1", key[0], "mlmodels", key[1],
                {"spec": {"serving": {"env": [{"name": "BENCH_GEN", "value": "1"}]}}})
            wait_until(lambda k=key: watcher.env_marks.get(k, ("", 0))[0] == "1", 60,
                       f"{key} updated")
            lat.append(watcher.env_marks[key][1] - t)
        figures["change"] = lat

        # Steady state: two resync periods with nothing changing.
        time.sleep(10)
        log(f"steady state: {2 * args.resync:.0f}s with nothing changing")
        cpu1 = op.cpu_s()
        since, until = quiet_window(2 * args.resync)
        figures["steady_cpu_per_resync_s"] = (op.cpu_s() - cpu1) / 2
        time.sleep(3)  # the audit backend writes in batches
        figures["steady_requests"] = audit_requests(since, until)
        figures["steady_rss_mb"] = op.rss_mb()

        # Half as many MLModels: the per-MLModel request count per resync should stay put.
        half = names[: args.models // 2]
        log(f"deleting {len(names) - len(half)} MLModels, then the same window again")
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: custom.delete_namespaced_custom_object(
                "serving.n1v1.io", "v1alpha1", k[0], "mlmodels", k[1]), names[len(half):]))
        figures["delete_s"] = wait_until(
            lambda: len(custom.list_cluster_custom_object(
                "serving.n1v1.io", "v1alpha1", "mlmodels")["items"]) == len(half),
            300, "the deleted MLModels to be gone")
        time.sleep(20)
        since, until = quiet_window(2 * args.resync)
        time.sleep(3)
        figures["half_requests"] = audit_requests(since, until)
        figures["half_models"] = len(half)
    finally:
        op.stop()
        watcher.stop.set()
        if not args.keep:
            cluster("down")
    report(figures, args.resync)
    return 0


def floor(admin: Path, n: int, keep: bool) -> int:
    """What the cluster alone needs: the operator's own manifests (builders) for n MLModels,
    applied by 16 threads with server-side apply as the operator does, no MLModel, no
    status. The operator cannot converge faster than this on the same machine."""
    from kubernetes import config
    from mlmodel_operator import builders
    from mlmodel_operator.apply import Kube
    from mlmodel_operator.spec import parse_spec

    api = config.new_client_from_config(config_file=str(admin))
    api.configuration.connection_pool_maxsize = 32
    kube = Kube(api)
    watcher = Watcher(api)
    names = [(f"opbench-{i % NAMESPACES}", f"m{i:04d}") for i in range(n)]
    t0 = time.monotonic()

    def write(key: tuple[str, str]) -> None:
        owner = builders.Owner(name=key[1], namespace=key[0], uid="", generation=1)
        spec = parse_spec(mlmodel(key[1])["spec"])
        for m in (builders.build_deployment(owner, spec, "n1v1-ml-serving:0.1.0"),
                  builders.build_service(owner), builders.build_alert_configmap(owner, spec)):
            m["metadata"].pop("ownerReferences", None)  # no MLModel owns them here
            kube.apply(m, "", verify=True)

    log(f"floor: writing the children of {n} MLModels directly (no operator)")
    try:
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(write, names))
        written = time.monotonic() - t0
        wait_until(lambda: len(watcher.available) >= n, 900, "every Deployment available",
                   lambda: f"available {len(watcher.available)}")
        print(f"\nfloor: {n} MLModels' children written in {written:.1f} s, every Deployment "
              f"available {time.monotonic() - t0:.1f} s after the first write "
              f"({os.cpu_count()} CPUs)")
    finally:
        watcher.stop.set()
        if not keep:
            cluster("down")
    return 0


def report(f: dict[str, Any], resync: float) -> None:
    n = f["models"]
    ms = lambda xs: f"p50 {pct(xs, 50):5.1f} s  p95 {pct(xs, 95):5.1f} s  max {max(xs):5.1f} s"  # noqa: E731
    print()
    print(f"operator at scale: {n} MLModels, {NAMESPACES} namespaces, "
          f"{(n + PODS_PER_NODE - 1) // PODS_PER_NODE} kwok nodes, resync {resync:.0f} s, "
          f"{os.cpu_count()} CPUs")
    print(f"  applied (16 client threads)          {f['applied_s']:6.1f} s")
    print(f"  apply -> children written            {ms(f['written'])}")
    print(f"  apply -> children written + Ready    {ms(f['converge'])}")
    print(f"    cluster's share (Deployment -> available) {ms(f['cluster_share'])}")
    print(f"    available -> MLModel Ready        {ms(f['status_lag'])}")
    print(f"  first apply -> all {n} Ready          {f['converge_all_s']:6.1f} s   "
          f"(goal < {GOALS['converge_s']:.0f} s: "
          f"{'met' if f['converge_all_s'] < GOALS['converge_s'] else 'NOT met'})")
    print(f"  operator CPU while converging        {f['converge_cpu_s']:6.1f} s")
    print(f"  one spec change -> Deployment updated {ms(f['change'])}")
    print(f"  operator RSS: idle {f['idle_rss_mb']:.0f} MB, converged "
          f"{f['converged_rss_mb']:.0f} MB, steady {f['steady_rss_mb']:.0f} MB "
          f"(goal < {GOALS['rss_mb']:.0f} MB: "
          f"{'met' if f['steady_rss_mb'] < GOALS['rss_mb'] else 'NOT met'})")
    print(f"  operator CPU per resync (steady)     {f['steady_cpu_per_resync_s']:6.2f} s")
    for reqs, models in ((f["steady_requests"], n), (f["half_requests"], f["half_models"])):
        total = sum(reqs.values())
        print(f"  API requests over two resyncs at {models} MLModels: {total} "
              f"= {total / models / 2:.2f} per MLModel per resync")
        for k, v in sorted(reqs.items(), key=lambda kv: -kv[1]):
            print(f"      {v:6d}  {k}")
    a = sum(f["steady_requests"].values()) / n
    b = sum(f["half_requests"].values()) / max(1, f["half_models"])
    print(f"  per-MLModel requests, {n} vs {f['half_models']}: {a / 2:.2f} vs {b / 2:.2f} "
          f"per resync (linear: {'yes' if abs(a - b) <= 0.15 * max(a, b) + 0.05 else 'NO'})")
    (WORK / "figures.json").write_text(json.dumps(f, indent=1))


if __name__ == "__main__":
    sys.exit(main())
