"""Pure pod diagnosis: the runtime pods' status JSON in, "why is this not ready" out.

The Deployment only counts pods; it never says why the new ones do not become ready. The
kubelet and the scheduler do, in the pods' own status: a PodScheduled=False condition, a
container's waiting reason (image pull, config errors, CrashLoopBackOff) and the last
termination (exit code, OOMKilled, the termination message). This module turns that into one
condition reason + message for the MLModel.

Which pods count: only pods of the Deployment's CURRENT template (`current_pods`). Old pods
must not be blamed for a new version, nor new ones for the old. The operator stamps every
pod template with `names.TEMPLATE_HASH_LABEL`, a hash of the template it builds (version,
image, env, resources, everything), and pods inherit it; a pod is current when its label
equals the live Deployment template's. This needs nothing but the pods themselves (no
ReplicaSet reads, so no extra RBAC) and is exact for every change the operator makes, also
one that keeps the version (a memory bump that fixes an OOMKilled), unlike the version
label, and it stays right when the Deployment controller re-uses an old ReplicaSet (a
revert: the old hash is then current again). A template without the label (written by an
older operator) falls back to the version label.

Messages are kept stable between the events of one failure (no timestamps, no restart
counts): the status is written only when it changes, and a crash loop must not rewrite it on
every restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .names import FETCH_CONTAINER, RUNTIME_CONTAINER, TEMPLATE_HASH_LABEL, VERSION_LABEL

# Exit codes of `python -m serving_runtime.tools.fetch` (serving_runtime/tools/fetch/errors.py;
# a test holds the two equal — the operator does not import the runtime package).
FETCH_EXIT: dict[int, tuple[str, str]] = {
    1: ("FetchFailed", "fetch failed"),
    2: ("FetchFailed", "invalid fetch arguments"),
    3: ("FetchSourceUnreadable", "the model source cannot be read"),
    4: ("FetchSha256Mismatch", "the artifact's sha256 differs from the pinned one"),
    5: ("FetchUnsafeArtifact", "the artifact is unsafe to unpack"),
    6: ("FetchInvalidModelFolder", "not a valid model folder or its metadata disagrees"),
}
# Exit codes of `python -m serving_runtime` worth a word (docs/contracts.md).
RUNTIME_EXIT: dict[int, str] = {
    2: "invalid runtime settings",
    3: "a model failed to load at start-up",
    137: "killed (SIGKILL): a failed liveness/startup probe, or out of memory",
    143: "stopped (SIGTERM)",
}
# Waiting reasons set by the kubelet -> our condition reason. Kept close to the kubelet's
# names so they can be searched for; ErrImagePull and ImagePullBackOff alternate on every
# retry, so both map to one reason (else Ready's reason would flap with the back-off).
WAITING_REASONS: dict[str, str] = {
    "ErrImageNeverPull": "ImageNotPresent",
    "ErrImagePull": "ImagePullFailed",
    "ImagePullBackOff": "ImagePullFailed",
    "InvalidImageName": "InvalidImageName",
    "CreateContainerConfigError": "CreateContainerConfigError",
    "CreateContainerError": "CreateContainerError",
}
# When pods disagree, the cause most likely to be the template's own fault wins (a bad
# image or artifact fails every pod; an unschedulable surge pod may be a capacity matter).
_RANK = {
    "ImageNotPresent": 0,
    "ImagePullFailed": 0,
    "InvalidImageName": 0,
    "CreateContainerConfigError": 0,
    "CreateContainerError": 0,
    "FetchSourceUnreadable": 1,
    "FetchSha256Mismatch": 1,
    "FetchUnsafeArtifact": 1,
    "FetchInvalidModelFolder": 1,
    "FetchFailed": 1,
    "OOMKilled": 2,
    "CrashLoopBackOff": 3,
    "Unschedulable": 4,
}
MAX_DETAIL = 1024  # a termination message may be 4 KiB of log tail; a condition needs less


@dataclass(frozen=True)
class Diagnosis:
    """Why pods of the current template are not ready: a condition reason and message."""

    reason: str
    message: str
    pod: str = ""


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def current_pods(
    pods: Iterable[dict[str, Any]] | None, deployment: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The pods of the Deployment's current template (see the module docstring)."""
    if not pods or deployment is None:
        return []
    tmpl = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    for label in (TEMPLATE_HASH_LABEL, VERSION_LABEL):
        want = tmpl.get(label)
        if want is not None:
            return [p for p in pods if _labels(p).get(label) == want]
    return []  # nothing tells old from new: blame no pod rather than the wrong one


def _detail(text: str | None) -> str:
    """A termination/kubelet message made fit for a condition: its telling part, one line.

    With terminationMessagePolicy FallbackToLogsOnError the kubelet stores the log tail;
    the fetch's own line (`fetch: error: ...`) or else the last line is the one that says why.
    """
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    picked = next((ln for ln in reversed(lines) if ln.startswith("fetch: error:")), None)
    out = picked.removeprefix("fetch: error:").strip() if picked else lines[-1]
    return out if len(out) <= MAX_DETAIL else out[: MAX_DETAIL - 3] + "..."


def _pull_detail(message: str) -> str:
    """The kubelet's pull error without the prefixes that differ between ErrImagePull and
    ImagePullBackOff, so both states of one failure give one message."""
    msg = message.strip()
    for prefix in ("Back-off pulling image ", "Failed to pull image "):
        if msg.startswith(prefix):
            rest = msg[len(prefix) :]
            # drop the quoted image name: the message names the image itself
            if rest.startswith('"') and '"' in rest[1:]:
                rest = rest[rest.index('"', 1) + 1 :]
            msg = rest.lstrip(": ").strip()
            break
    msg = msg.removeprefix("ErrImagePull:").strip()
    return _detail(msg) or "the kubelet backs off after a failed pull"


def _spec_container(pod: dict[str, Any], name: str, init: bool) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    for c in pod.get("spec", {}).get(key, []) or []:
        if c.get("name") == name:
            return c
    return {}


def _memory_limit(pod: dict[str, Any], name: str, init: bool) -> str | None:
    c = _spec_container(pod, name, init)
    return ((c.get("resources") or {}).get("limits") or {}).get("memory")


def _container(pod: dict[str, Any], st: dict[str, Any], init: bool) -> tuple[str, str] | None:
    """(reason, message) for one container status, or None when it looks healthy/normal."""
    name = st.get("name", "?")
    pod_name = pod.get("metadata", {}).get("name", "?")
    what = f"{'init container' if init else 'container'} {name} of pod {pod_name}"
    state = st.get("state") or {}
    waiting = state.get("waiting") or {}
    w_reason = waiting.get("reason") or ""

    if w_reason in WAITING_REASONS:
        reason = WAITING_REASONS[w_reason]
        msg = waiting.get("message") or ""
        if reason == "ImagePullFailed":
            image = _spec_container(pod, name, init).get("image") or st.get("image") or "?"
            return reason, f'{what}: image "{image}" cannot be pulled: {_pull_detail(msg)}'
        return reason, f"{what}: {_detail(msg) or w_reason}"

    if st.get("ready"):
        return None
    # The latest termination: the current state while the container is between runs, else
    # the last one. Looking at lastState too keeps the diagnosis across the whole crash loop
    # (running again -> terminated -> CrashLoopBackOff -> running), so Ready's reason does
    # not flap with every restart.
    term = state.get("terminated")
    if not term and (state.get("running") or w_reason == "CrashLoopBackOff"):
        term = (st.get("lastState") or {}).get("terminated")
    if not term:
        return None
    code = int(term.get("exitCode") or 0)
    if term.get("reason") == "OOMKilled":
        limit = _memory_limit(pod, name, init)
        where = (
            f"its memory limit of {limit}" if limit else "the node's memory (no memory limit set)"
        )
        return "OOMKilled", (
            f"{what} was OOMKilled: it used more than {where}; raise "
            "spec.serving.resources.limits.memory or use a smaller model"
        )
    if code == 0:
        return None  # an init container that finished, or a clean exit (e.g. a drain)
    detail = _detail(term.get("message"))
    if init and name == FETCH_CONTAINER:
        reason, meaning = FETCH_EXIT.get(code, ("FetchFailed", "fetch failed"))
        return reason, f"{what} exited with code {code} ({meaning})" + (
            f": {detail}" if detail else ""
        )
    if init:
        return "CrashLoopBackOff", f"{what} exited with code {code}" + (
            f": {detail}" if detail else ""
        )
    hint = RUNTIME_EXIT.get(code) if name == RUNTIME_CONTAINER else None
    return "CrashLoopBackOff", (
        f"{what} keeps exiting: last exit code {code}"
        + (f" ({hint})" if hint else "")
        + (f": {detail}" if detail else "")
    )


def diagnose_pod(pod: dict[str, Any]) -> Diagnosis | None:
    """What keeps this one pod from being ready, following a pod's life: scheduling, init
    containers in order, then the containers. None: nothing wrong (yet)."""
    meta = pod.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return None  # on its way out: whatever it does no longer matters
    st = pod.get("status") or {}
    if st.get("phase") in ("Succeeded", "Failed"):
        return None  # the ReplicaSet replaces it (e.g. evicted); the replacement is diagnosed
    name = meta.get("name", "?")
    for c in st.get("conditions") or []:
        if (
            c.get("type") == "PodScheduled"
            and c.get("status") == "False"
            and c.get("reason") == "Unschedulable"
        ):
            why = _detail(c.get("message")) or "no node fits"
            return Diagnosis("Unschedulable", f"pod {name} cannot be scheduled: {why}", name)
    for init, key in ((True, "initContainerStatuses"), (False, "containerStatuses")):
        for cs in st.get(key) or []:
            found = _container(pod, cs, init)
            if found:
                return Diagnosis(found[0], found[1], name)
    return None


def diagnose(pods: Iterable[dict[str, Any]]) -> Diagnosis | None:
    """The one cause to report for these pods (pass `current_pods(...)`), or None.

    Deterministic (rank, then pod name), so the same pods always give the same answer.
    """
    found = [d for d in (diagnose_pod(p) for p in pods) if d is not None]
    if not found:
        return None
    return min(found, key=lambda d: (_RANK.get(d.reason, 5), d.pod))
