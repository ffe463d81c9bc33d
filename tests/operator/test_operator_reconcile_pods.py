"""reconcile reads the MLModel's pods; pod events reach it cheaply (handlers)."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from mlmodel_operator import builders, handlers
from mlmodel_operator import reconcile as rec
from mlmodel_operator.apply import ApplyResult
from mlmodel_operator.network_policy import Access
from mlmodel_operator.pod_diagnosis import diagnose_pod
from mlmodel_operator.settings import OperatorSettings

from tests.operator.pod_fixtures import (
    IMAGE,
    OWNER,
    crashloop_waiting,
    ready_pod,
    runtime_state,
    terminated,
    unschedulable_pod,
)


class FakeKube:
    """The calls reconcile makes, against an in-memory MLModel, Deployment and pods."""

    def __init__(self, pods: list[dict[str, Any]], list_error: int | None = None) -> None:
        self.body: dict[str, Any] = {
            "apiVersion": "serving.n1v1.io/v1alpha1",
            "kind": "MLModel",
            "metadata": {
                "name": OWNER.name,
                "namespace": OWNER.namespace,
                "uid": OWNER.uid,
                "generation": OWNER.generation,
                "resourceVersion": "1",
            },
            "spec": {
                "model": {"framework": "sklearn", "version": "2.0.0", "uri": "https://h/m.tar.gz"},
                "serving": {"replicas": 2},
            },
        }
        self.pods = pods
        self.list_error = list_error
        self.pod_queries: list[tuple[str, str]] = []
        self.status_writes: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.seen: set[tuple[str, str]] = set()
        # A rollout in progress: one new pod of two, not ready.
        self.dep_status = {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 0,
            "availableReplicas": 0,
            "conditions": [],
        }

    def get_mlmodel(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.body)

    def apply(self, manifest: dict[str, Any], owner_uid: str) -> ApplyResult:
        key = (manifest["kind"], manifest["metadata"]["name"])
        action = "unchanged" if key in self.seen else "created"
        self.seen.add(key)
        obj = copy.deepcopy(manifest)
        if manifest["kind"] == "Deployment":
            obj["metadata"]["generation"] = 1
            obj["status"] = copy.deepcopy(self.dep_status)
        return ApplyResult(action, obj)

    def delete_owned(self, *_: Any) -> bool:
        return False

    def has_resource(self, *_: Any) -> bool:
        return False

    def get(self, path: str) -> None:
        return None

    def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status_writes.append(status)
        merged = dict(self.body.get("status") or {})
        for k, v in status.items():  # a merge patch: None removes the key
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        self.body["status"] = merged

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.pod_queries.append((namespace, label_selector))
        if self.list_error:
            raise ApiException(status=self.list_error, reason="Forbidden")
        return copy.deepcopy(self.pods)


def run(kube: FakeKube, **kw: Any) -> dict[str, Any] | None:
    return rec.reconcile(
        kube,
        OWNER.namespace,
        OWNER.name,
        runtime_image=IMAGE,
        trigger="test",
        **kw,
    )


def ready(st: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == "Ready")


def test_reconcile_lists_the_models_pods_and_names_the_cause():
    kube = FakeKube([unschedulable_pod()])
    st = run(kube)
    assert st is not None
    assert kube.pod_queries == [(OWNER.namespace, builders.selector_string(OWNER.name))]
    assert ready(st)["reason"] == "Unschedulable"
    assert kube.body["status"]["phase"] == "Unschedulable"
    assert ("Warning", "Unschedulable") in {(t, r) for t, r, _ in kube.events}
    # The same pods again: no status write, no new Event.
    writes, events = len(kube.status_writes), len(kube.events)
    run(kube)
    assert (len(kube.status_writes), len(kube.events)) == (writes, events)


def test_a_failed_pod_list_only_costs_the_diagnosis():
    kube = FakeKube([unschedulable_pod()], list_error=403)
    st = run(kube)
    assert st is not None and ready(st)["reason"] == "RolloutInProgress"
    assert kube.status_writes


def test_an_mlmodel_deleted_during_its_reconcile_is_not_an_error():
    """The status write finds the MLModel gone (404): the reconcile ends quietly, as when
    it is gone at the start, instead of failing a handler."""
    kube = FakeKube([ready_pod()])

    def gone(*_: Any) -> None:
        raise ApiException(status=404, reason="Not Found")

    kube.patch_status = gone  # type: ignore[method-assign]
    assert run(kube) is None
    kube.patch_status = lambda *_: (_ for _ in ()).throw(  # type: ignore[method-assign]
        ApiException(status=500, reason="boom")
    )
    with pytest.raises(ApiException):
        run(kube)


def pods_memo() -> kopf.Memo:
    """What a pod handler's memo holds (a copy of the operator memo; no Kube needed here).
    The queue has no worker threads: the test drains it."""
    return handlers.operator_memo(OperatorSettings(), kube=None)  # type: ignore[arg-type]


def test_pod_events_trigger_a_reconcile_only_when_the_pods_diagnosis_changes(monkeypatch):
    calls: list[tuple[str, str, str, bool]] = []
    monkeypatch.setattr(
        handlers, "_run", lambda memo, ns, name, trigger: calls.append((ns, name, trigger)))
    memo = pods_memo()
    last = terminated(3, message="model fraud failed to load: golden check failed")
    name = "fraud-6d4f9c8b7-x2x7k"
    life = [
        ("ADDED", unschedulable_pod(name=name)),  # Unschedulable: reconcile
        ("MODIFIED", unschedulable_pod(name=name)),  # unchanged: nothing
        ("MODIFIED", runtime_state({"running": {"startedAt": "t"}}, name=name)),  # fixed
        ("MODIFIED", runtime_state(crashloop_waiting("runtime"), last, name=name)),  # crash
        ("MODIFIED", runtime_state({"running": {"startedAt": "t2"}}, last, name=name)),  # same
        ("MODIFIED", runtime_state(crashloop_waiting("runtime", "5m0s"), last, name=name)),
        ("DELETED", runtime_state(crashloop_waiting("runtime"), last, name=name)),  # gone
    ]
    for type_, body in life:
        handlers._pod_event(body=body, type=type_, namespace=OWNER.namespace, memo=memo)
        memo.queue.drain()
    assert calls == [(OWNER.namespace, OWNER.name, "pod")] * 4
    assert len(memo.pods) == 0


def test_pod_events_of_healthy_pods_cost_nothing(monkeypatch):
    calls: list[Any] = []
    monkeypatch.setattr(handlers, "_run", lambda *a, **kw: calls.append(a))
    memo = pods_memo()
    for i in range(20):  # what kwok does: pods go straight to Running and Ready
        p = ready_pod(name=f"fraud-6d4f9c8b7-p{i:03d}")
        for type_ in ("ADDED", "MODIFIED", "MODIFIED", "DELETED"):
            handlers._pod_event(body=p, type=type_, namespace=OWNER.namespace, memo=memo)
    handlers._pod_event(body=unschedulable_pod(), type=None, namespace=OWNER.namespace, memo=memo)
    assert memo.queue.drain() == 0
    assert calls == []


def test_pod_without_the_model_label_is_ignored(monkeypatch):
    calls: list[Any] = []
    monkeypatch.setattr(handlers, "_run", lambda *a, **kw: calls.append(a))
    p = unschedulable_pod()
    del p["metadata"]["labels"][handlers.MODEL_LABEL]
    memo = pods_memo()
    handlers._pod_event(body=p, type="ADDED", namespace=OWNER.namespace, memo=memo)
    assert memo.queue.drain() == 0 and calls == []


def test_pods_and_children_are_watched_with_server_side_selectors():
    from kopf._cogs.structs.references import Resource

    settings = kopf.OperatorSettings()
    handlers._startup(settings, memo=kopf.Memo())
    pods = Resource("", "v1", "pods", kind="Pod", namespaced=True)
    deps = Resource("apps", "v1", "deployments", kind="Deployment", namespaced=True)
    assert settings.watching.label_selectors.collect(pods) == [handlers.POD_SELECTOR]
    # Children too: a cluster's other ConfigMaps and Deployments never reach the operator.
    assert settings.watching.label_selectors.collect(deps) == [handlers.MANAGED_SELECTOR]
    cms = Resource("", "v1", "configmaps", kind="ConfigMap", namespaced=True)
    assert settings.watching.label_selectors.collect(cms) == [handlers.MANAGED_SELECTOR]
    # The selector matches the labels every runtime pod carries.
    labels = unschedulable_pod()["metadata"]["labels"]
    for part in handlers.POD_SELECTOR.split(","):
        k, _, v = part.partition("=")
        assert k in labels and (not v or labels[k] == v)


@pytest.mark.parametrize("type_", ["ADDED", "MODIFIED"])
def test_first_sighting_of_a_failing_pod_counts_as_a_change(type_):
    pods = handlers.PodMemory()
    d = diagnose_pod(unschedulable_pod())
    assert pods.changed("u1", type_, d)
    assert not pods.changed("u1", "MODIFIED", d)
    assert pods.changed("u1", "DELETED", None)
    assert not pods.changed("u2", "DELETED", None)


def test_pod_memory_starts_afresh_when_full():
    pods = handlers.PodMemory(max_pods=2)
    d = diagnose_pod(unschedulable_pod())
    assert pods.changed("u1", "ADDED", d) and pods.changed("u2", "ADDED", d)
    assert pods.changed("u3", "ADDED", d)  # a third uid: the two before are forgotten
    assert len(pods) == 1


def test_startup_reads_the_operator_settings_from_the_memo():
    settings = kopf.OperatorSettings()
    ours = OperatorSettings(watch_timeout_seconds=120, namespaces="team-a")
    memo = handlers.operator_memo(ours, kube=FakeKube([]))
    pods = memo.pods
    handlers._startup(settings, memo=memo)
    assert memo.settings is ours and memo.pods is pods  # what __main__ passed is kept
    assert settings.watching.server_timeout == 120
    assert settings.watching.client_timeout == 120 + handlers.WATCH_CLIENT_MARGIN_SECONDS
    assert settings.scanning.disabled
    assert settings.persistence.finalizer == "serving.n1v1.io/kopf-finalizer"


def test_startup_without_a_memo_from_main_fills_in_defaults():
    memo = kopf.Memo()
    handlers._startup(kopf.OperatorSettings(), memo=memo)
    assert isinstance(memo.settings, OperatorSettings)
    assert isinstance(memo.pods, handlers.PodMemory)


def test_handlers_reconcile_with_the_memos_client_and_image(monkeypatch):
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        rec, "reconcile", lambda kube, ns, name, **kw: seen.append((kube, ns, name, kw))
    )
    kube = FakeKube([])
    memo = handlers.operator_memo(
        OperatorSettings(runtime_image="img:memo", prometheus_url="http://p:9090/",
                         latency_window="20s", scrape_namespaces="mon, obs"),
        kube,
    )
    handlers._resync_one(memo, "ns", "m", verify=False)
    assert memo.queue.drain() == 1
    assert seen == [
        (kube, "ns", "m", {"runtime_image": "img:memo", "trigger": "resync",
                           "monitoring": builders.Monitoring("http://p:9090", "20s", 15),
                           # not in a pod: no operator namespace to let in
                           "access": Access(scrape_namespaces=("mon", "obs"))})
    ]
