"""Runtime pods as the API server returns them (Kubernetes v1.37 JSON), for status tests.

`pod()` starts from the pod template the operator builds (so pods carry the real labels,
including the template hash) and adds what the API server, the scheduler and the kubelet
fill in; the `*_status` helpers below are the status shapes of each failure.
"""

from __future__ import annotations

import copy
from typing import Any

from mlmodel_operator import builders
from mlmodel_operator.spec import parse_spec

OWNER = builders.Owner(name="fraud", namespace="team-a", uid="5b2f0c9e-uid", generation=2)
T0 = "2026-03-02T09:14:05Z"
T1 = "2026-03-02T09:14:41Z"
T2 = "2026-03-02T09:15:20Z"
IMAGE = "registry.example.com/n1v1-ml-serving:0.1.0"


def deployment(version: str = "2.0.0", **serving: Any) -> dict[str, Any]:
    raw = {
        "model": {"framework": "sklearn", "version": version, "uri": "https://h/m.tar.gz"},
        "serving": {"replicas": 2, **serving},
    }
    return builders.build_deployment(OWNER, parse_spec(raw), IMAGE)


def _volume_mounts(c: dict[str, Any]) -> list[dict[str, Any]]:
    # The kubelet reports mounts in the status too (with the service-account one absent:
    # automountServiceAccountToken is false).
    return [
        {
            "name": m["name"],
            "mountPath": m["mountPath"],
            **({"readOnly": True} if m.get("readOnly") else {}),
            "recursiveReadOnly": "Disabled",
        }
        for m in c.get("volumeMounts", [])
    ]


def container_status(
    c: dict[str, Any],
    *,
    state: dict[str, Any],
    last: dict[str, Any] | None = None,
    ready: bool = False,
    restarts: int = 0,
    started: bool | None = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c["name"],
        "state": state,
        "lastState": last or {},
        "ready": ready,
        "restartCount": restarts,
        "image": c["image"],
        "imageID": "",
        "volumeMounts": _volume_mounts(c),
        "user": {"linux": {"uid": 10001, "gid": 10001, "supplementalGroups": [10001]}},
        "resources": copy.deepcopy(c.get("resources", {})),
        "allocatedResources": copy.deepcopy(c.get("resources", {}).get("requests", {})),
    }
    if started is not None:
        out["started"] = started
    if "running" in state or "terminated" in state:
        out["containerID"] = f"containerd://{c['name']}-0f3c9a1b7e2d"
        out["imageID"] = f"{IMAGE.split(':')[0]}@sha256:" + "ab" * 32
    return out


def pod(
    dep: dict[str, Any] | None = None,
    *,
    name: str = "fraud-6d4f9c8b7-x2x7k",
    template_hash: str = "6d4f9c8b7",
    phase: str = "Pending",
    conditions: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    dep = dep or deployment()
    tmpl = copy.deepcopy(dep["spec"]["template"])
    spec = tmpl["spec"]
    spec.update(
        {
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "priority": 0,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
        }
    )
    for c in spec["initContainers"] + spec["containers"]:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
    if phase != "Pending" or init_statuses or statuses:
        spec["nodeName"] = "worker-1"
    meta: dict[str, Any] = {
        "name": name,
        "generateName": f"fraud-{template_hash}-",
        "namespace": OWNER.namespace,
        "uid": f"uid-{name}",
        "resourceVersion": "48213",
        "generation": 1,
        "creationTimestamp": T0,
        "labels": {**tmpl["metadata"]["labels"], "pod-template-hash": template_hash},
        "annotations": tmpl["metadata"]["annotations"],
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"fraud-{template_hash}",
                "uid": f"rs-{template_hash}",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if deleting:
        meta["deletionTimestamp"] = T2
        meta["deletionGracePeriodSeconds"] = 30
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "phase": phase,
        "conditions": conditions if conditions is not None else [],
        "qosClass": "Burstable",
    }
    if "nodeName" in spec:
        status.update(
            {
                "hostIP": "172.18.0.3",
                "hostIPs": [{"ip": "172.18.0.3"}],
                "podIP": "10.244.1.17",
                "podIPs": [{"ip": "10.244.1.17"}],
                "startTime": T0,
            }
        )
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    if statuses is not None:
        status["containerStatuses"] = statuses
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def cond(
    ctype: str, status: str, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "type": ctype,
        "status": status,
        "observedGeneration": 1,
        "lastProbeTime": None,
        "lastTransitionTime": T0,
    }
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def fetch_c(dep: dict[str, Any] | None = None) -> dict[str, Any]:
    return (dep or deployment())["spec"]["template"]["spec"]["initContainers"][0]


def runtime_c(dep: dict[str, Any] | None = None) -> dict[str, Any]:
    return (dep or deployment())["spec"]["template"]["spec"]["containers"][0]


def scheduled_conditions(*, initialized: bool, ready: bool = False) -> list[dict[str, Any]]:
    not_ready = "containers with unready status: [runtime]"
    return [
        cond("PodReadyToStartContainers", "True"),
        cond("Initialized", "True")
        if initialized
        else cond(
            "Initialized",
            "False",
            "ContainersNotInitialized",
            "containers with incomplete status: [fetch-model]",
        ),
        cond("Ready", "True") if ready else cond("Ready", "False", "ContainersNotReady", not_ready),
        cond("ContainersReady", "True")
        if ready
        else cond("ContainersReady", "False", "ContainersNotReady", not_ready),
        cond("PodScheduled", "True"),
    ]


def fetch_done() -> dict[str, Any]:
    return container_status(
        fetch_c(),
        state={
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": T0,
                "finishedAt": T1,
                "containerID": "containerd://fetch-model-0f3c9a1b7e2d",
            }
        },
    )


def terminated(
    code: int, reason: str = "Error", message: str | None = None, at: str = T1
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "exitCode": code,
        "reason": reason,
        "startedAt": T0,
        "finishedAt": at,
        "containerID": "containerd://c-5e1d2c3b4a",
    }
    if message is not None:
        t["message"] = message
    return {"terminated": t}


def crashloop_waiting(container: str, backoff: str = "40s") -> dict[str, Any]:
    return {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {backoff} restarting failed container={container} "
            f"pod=fraud-6d4f9c8b7-x2x7k_team-a(uid-fraud-6d4f9c8b7-x2x7k)",
        }
    }


def fetch_failing(code: int, message: str, *, backoff: str = "40s") -> dict[str, Any]:
    """A pod whose fetch-model init container exits `code` (Init:CrashLoopBackOff)."""
    return pod(
        conditions=scheduled_conditions(initialized=False),
        init_statuses=[
            container_status(
                fetch_c(),
                state=crashloop_waiting("fetch-model", backoff),
                last=terminated(code, message=message),
                restarts=3,
            )
        ],
        statuses=[container_status(runtime_c(), state={"waiting": {"reason": "PodInitializing"}})],
    )


def runtime_state(
    state: dict[str, Any],
    last: dict[str, Any] | None = None,
    *,
    dep: dict[str, Any] | None = None,
    name: str = "fraud-6d4f9c8b7-x2x7k",
    template_hash: str = "6d4f9c8b7",
    ready: bool = False,
    restarts: int = 0,
) -> dict[str, Any]:
    """A pod past its init container whose runtime container is in `state`."""
    dep = dep or deployment()
    return pod(
        dep,
        name=name,
        template_hash=template_hash,
        phase="Running",
        conditions=scheduled_conditions(initialized=True, ready=ready),
        init_statuses=[fetch_done()],
        statuses=[
            container_status(
                runtime_c(dep),
                state=state,
                last=last,
                ready=ready,
                restarts=restarts,
                started="running" in state,
            )
        ],
    )


def ready_pod(dep: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return runtime_state({"running": {"startedAt": T1}}, dep=dep, ready=True, **kw)


UNSCHEDULABLE_MSG = (
    "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) "
    "had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes "
    "are available: 2 Preemption is not helpful for scheduling."
)


def unschedulable_pod(dep: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return pod(
        dep,
        conditions=[cond("PodScheduled", "False", "Unschedulable", UNSCHEDULABLE_MSG)],
        **kw,
    )
