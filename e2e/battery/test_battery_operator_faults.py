"""Operator faults: SIGKILL at random moments during churn, an API server restart, an etcd
restart, a watch that goes silent. Afterwards every MLModel has exactly one set of children
at its latest spec and its status observed at its latest generation, and nothing is
orphaned. Each test prints its figures (operations, kills, restarts, time to converge).

Runs on kwok (no containers needed); the restarts use e2e/cluster/restart, so they need the
local cluster of e2e/cluster/up.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from e2e.battery.fault_proxy import SilencingProxy
from e2e.helpers import REPO_ROOT, wait_for
from e2e.mlmodels import MLModels, base_mlmodel
from e2e.operator_process import OperatorProcess

GROUP, VERSION, PLURAL = "serving.n1v1.io", "v1alpha1", "mlmodels"
MANAGED = "app.kubernetes.io/managed-by=n1v1-mlmodel-operator"
RESTART = REPO_ROOT / "e2e" / "cluster" / "restart"
PIDS = REPO_ROOT / "e2e" / ".state" / "pids"


def _soak() -> bool:
    return os.environ.get("N1V1_SOAK", "").lower() in ("1", "true", "yes")


POOL = 24 if _soak() else 10
CHURN_SECONDS = 180 if _soak() else 35


class Churn:
    """Random creates, spec changes and deletes on a pool of MLModel names, as the admin."""

    def __init__(self, k8s, namespace: str, seed: int) -> None:
        self.k8s, self.ns = k8s, namespace
        self.rng = random.Random(seed)
        self.names = [f"m{i:02d}" for i in range(POOL)]
        self.ops = {"create": 0, "update": 0, "delete": 0, "refused": 0}

    def step(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        name = self.rng.choice(self.names)
        api = self.k8s.custom
        try:
            current = api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                self.ops["refused"] += 1
                return
            current = None
        except (HTTPError, OSError):  # the API server is down (a restart test)
            self.ops["refused"] += 1
            return
        try:
            if current is None:
                body = base_mlmodel(name, serving={"replicas": self.rng.randint(0, 3)})
                api.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
                self.ops["create"] += 1
            elif current["metadata"].get("deletionTimestamp"):
                return
            elif self.rng.random() < 0.25:
                api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
                self.ops["delete"] += 1
            else:
                patch = {"spec": {
                    "model": {"version": f"1.{self.rng.randint(0, 99)}.0"},
                    "serving": {"replicas": self.rng.randint(0, 3)},
                }}
                api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, patch)
                self.ops["update"] += 1
        except ApiException:
            self.ops["refused"] += 1  # a conflict or a name still being deleted
        except (HTTPError, OSError):
            self.ops["refused"] += 1

    def total(self) -> int:
        return self.ops["create"] + self.ops["update"] + self.ops["delete"]

    def changes(self, count: int, timeout: float = 120) -> None:
        """Step until `count` more changes went through. Counted, not timed: just after an
        API server restart, requests are refused (403 until its RBAC caches fill, 429
        while storage initialises) for as long as the machine's load makes it."""
        goal = self.total() + count
        deadline = time.monotonic() + timeout
        while self.total() < goal:
            assert time.monotonic() < deadline, f"{count} changes not accepted: {self.ops}"
            self.step()


def _env(dep: dict) -> dict[str, str]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def divergence(mlmodels: MLModels) -> list[str]:
    """What differs from "every MLModel has exactly one set of children at its latest spec,
    status at its latest generation, nothing orphaned"; empty when converged."""
    problems: list[str] = []
    mlms = {m["metadata"]["name"]: m for m in mlmodels.list("mlmodel", "")
            if not m["metadata"].get("deletionTimestamp")}
    uids = {m["metadata"]["uid"]: n for n, m in mlms.items()}
    children: dict[str, dict[str, list[dict]]] = {}
    for kind in ("deployment", "service", "configmap", "horizontalpodautoscaler"):
        for obj in mlmodels.list(kind, MANAGED):
            owners = [r["uid"] for r in obj["metadata"].get("ownerReferences", [])
                      if r.get("controller")]
            owner = uids.get(owners[0]) if owners else None
            if owner is None:
                problems.append(f"orphan {kind}/{obj['metadata']['name']} (owners {owners})")
                continue
            children.setdefault(owner, {}).setdefault(kind, []).append(obj)
    for name, m in mlms.items():
        st = m.get("status") or {}
        if st.get("observedGeneration") != m["metadata"]["generation"]:
            problems.append(f"{name}: status at generation {st.get('observedGeneration')}, "
                            f"spec at {m['metadata']['generation']}")
        mine = children.get(name, {})
        deps, svcs = mine.get("deployment", []), mine.get("service", [])
        if len(deps) != 1 or len(svcs) != 1:
            problems.append(f"{name}: {len(deps)} deployments, {len(svcs)} services")
            continue
        if mine.get("horizontalpodautoscaler"):
            problems.append(f"{name}: an HPA without autoscaling")
        spec = m["spec"]
        env = _env(deps[0])
        if env.get("MODEL_VERSION") != spec["model"]["version"]:
            problems.append(f"{name}: deployment at version {env.get('MODEL_VERSION')}, "
                            f"spec at {spec['model']['version']}")
        if deps[0]["spec"].get("replicas") != spec["serving"]["replicas"]:
            problems.append(f"{name}: deployment replicas {deps[0]['spec'].get('replicas')}, "
                            f"spec {spec['serving']['replicas']}")
    return problems


def converge(mlmodels: MLModels, timeout: float = 180) -> float:
    t0 = time.monotonic()
    wait_for(lambda: not divergence(mlmodels), timeout=timeout, interval=2,
             describe="every MLModel converged, nothing orphaned",
             observe=lambda: "\n".join(divergence(mlmodels)))
    return time.monotonic() - t0


def _needs_local_cluster() -> None:
    if not (PIDS / "kube-apiserver.cmd").is_file():
        pytest.skip("restarts need the local cluster of e2e/cluster/up (e2e/.state/pids)")


def restart(component: str) -> float:
    t0 = time.monotonic()
    subprocess.run([str(RESTART), component], check=True, timeout=240)
    return time.monotonic() - t0


def test_sigkill_at_random_moments_during_churn(run_operator, mlmodels, k8s, namespace):
    op = run_operator(namespace)
    churn = Churn(k8s, namespace, seed=12)
    kills = 0
    # counted, not timed: a busy machine takes longer to reach the same kills and changes
    # (a cold CI run on 2 cores made 4 kills and 36 changes in CHURN_SECONDS); the deadline
    # only bounds a run that stopped making progress
    at_least = time.monotonic() + CHURN_SECONDS
    deadline = time.monotonic() + 6 * CHURN_SECONDS
    next_kill = time.monotonic() + churn.rng.uniform(1, 4)
    while time.monotonic() < at_least or kills < 5 or churn.total() < 50:
        assert time.monotonic() < deadline, ("no progress", kills, churn.ops)
        churn.step()
        if time.monotonic() >= next_kill:
            op.stop(signal.SIGKILL)
            kills += 1
            for _ in range(churn.rng.randint(0, 6)):  # changes nobody watches
                churn.step()
            op.start()
            next_kill = time.monotonic() + churn.rng.uniform(1, 4)
    took = converge(mlmodels)
    print(f"operator SIGKILL battery: {churn.total()} operations {churn.ops}, {kills} kills, "
          f"{len(mlmodels.list('mlmodel', ''))} MLModels left, converged {took:.1f}s after "
          "the last change")
    assert kills >= 5 and churn.total() >= 50, (kills, churn.ops)


def test_api_server_and_etcd_restarts_during_churn(run_operator, mlmodels, k8s, namespace):
    _needs_local_cluster()
    op = run_operator(namespace)
    churn = Churn(k8s, namespace, seed=13)
    timings = {}
    for component in ("kube-apiserver", "etcd"):
        churn.changes(20)
        proc = subprocess.Popen([str(RESTART), component])
        t0 = time.monotonic()
        while proc.poll() is None:  # keep changing things while it is down and coming back
            churn.step()
            time.sleep(0.05)
        assert proc.returncode == 0, f"restart {component} failed"
        timings[component] = time.monotonic() - t0
        churn.changes(20)  # right after the restart, while watches are being re-made
        assert op.healthy(), f"the operator died during the {component} restart"
    took = converge(mlmodels)
    print(f"API server/etcd restart battery: {churn.total()} operations {churn.ops}; restart "
          f"took kube-apiserver {timings['kube-apiserver']:.1f}s, etcd {timings['etcd']:.1f}s; "
          f"operator stayed up; converged {took:.1f}s after the last change")


def test_a_silent_watch_is_dropped_and_renewed(operator_kubeconfig, mlmodels, namespace,
                                              tmp_path):
    config = yaml.safe_load(Path(operator_kubeconfig).read_text())
    (cluster,) = config["clusters"]
    proxy = SilencingProxy(cluster["cluster"]["server"])
    cluster["cluster"]["server"] = proxy.url
    via_proxy = tmp_path / "operator-via-proxy.kubeconfig"
    via_proxy.write_text(yaml.safe_dump(config))
    watch_timeout = 10
    op = OperatorProcess({
        **os.environ, "KUBECONFIG": str(via_proxy), "OPERATOR_NAMESPACES": namespace,
        "OPERATOR_WATCH_TIMEOUT_SECONDS": str(watch_timeout),
    }, tmp_path / "operator.log").start()
    try:
        mlmodels.apply(base_mlmodel("before"))
        mlmodels.wait_ready("before")
        silenced = proxy.silence()
        t0 = time.monotonic()
        mlmodels.apply(base_mlmodel("after"))
        mlmodels.patch_spec("before", {"model": {"version": "2.0.0"}})
        # Without a client-side timeout kopf would wait for the server's (300 s) on a
        # stream that never ends; with it, the change is seen after about watch + 15 s.
        mlmodels.wait_ready("after", timeout=watch_timeout + 90)
        seen = time.monotonic() - t0
        wait_for(lambda: _env(mlmodels.get("deployment", "before"))["MODEL_VERSION"] == "2.0.0",
                 timeout=60, describe="before's update applied")
        took = converge(mlmodels, timeout=60)
        print(f"silent watch battery: {silenced} connections silenced; a new MLModel reconciled "
              f"{seen:.1f}s later (watch timeout {watch_timeout}s + 15s margin); "
              f"{proxy.connections} connections through the proxy; converged +{took:.1f}s")
        assert op.healthy()
    finally:
        op.stop()
        print(f"----- operator log -----\n{op.logs()[-8000:]}")
        proxy.close()
