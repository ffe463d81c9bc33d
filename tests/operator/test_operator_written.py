"""written.py: what the operator wrote, and which watch events of children need a reconcile."""

from __future__ import annotations

import copy
import json
from typing import Any

from mlmodel_operator import builders
from mlmodel_operator.spec import parse_spec
from mlmodel_operator.written import WrittenMemory, key_of, manifest_digest

OWNER = builders.Owner(name="m", namespace="ns", uid="uid-1", generation=1)
SPEC = parse_spec({"model": {"framework": "sklearn", "version": "1.0.0",
                             "uri": "https://h/m.tar.gz"}})


def live_of(manifest: dict[str, Any], rv: str = "10", generation: int = 1) -> dict[str, Any]:
    """What the API server answers to an apply of `manifest` (plus server-set fields)."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(resourceVersion=rv, uid="child-uid", generation=generation,
                           managedFields=[{"manager": "n1v1-mlmodel-operator"}])
    return obj


def deployment() -> dict[str, Any]:
    return builders.build_deployment(OWNER, SPEC, "img:1")


def test_an_unchanged_manifest_is_recognised_and_a_changed_one_is_not():
    mem = WrittenMemory()
    dep = deployment()
    mem.wrote(dep, live_of(dep), owns_replicas=True)
    assert mem.unchanged(dep) is not None
    other = builders.build_deployment(OWNER, SPEC, "img:2")
    assert mem.unchanged(other) is None
    assert manifest_digest(dep) != manifest_digest(other)


def test_the_echo_of_our_own_write_needs_no_reconcile():
    mem = WrittenMemory()
    dep = deployment()
    mem.wrote(dep, live_of(dep, rv="10"), owns_replicas=True)
    assert mem.observe("ADDED", live_of(dep, rv="10")) is False
    assert mem.unchanged(dep) is not None


def test_a_deployment_status_change_updates_the_kept_body_and_asks_for_a_status_reconcile():
    mem = WrittenMemory()
    dep = deployment()
    mem.wrote(dep, live_of(dep, rv="10"), owns_replicas=True)
    later = live_of(dep, rv="11")
    later["status"] = {"observedGeneration": 1, "readyReplicas": 1}
    assert mem.observe("MODIFIED", later) is True  # the MLModel's Ready reads this
    entry = mem.unchanged(dep)
    assert entry is not None and entry.body is not None
    assert entry.body["status"] == {"observedGeneration": 1, "readyReplicas": 1}
    assert entry.resource_version == "11"
    assert "managedFields" not in entry.body["metadata"]
    # The same status again (e.g. an annotation-free resync of the controller): nothing to do.
    again = copy.deepcopy(later)
    again["metadata"]["resourceVersion"] = "12"
    assert mem.observe("MODIFIED", again) is False


def test_a_hand_edit_or_a_delete_drops_the_entry_so_the_next_apply_is_real():
    mem = WrittenMemory()
    dep = deployment()
    mem.wrote(dep, live_of(dep, rv="10"), owns_replicas=True)
    edited = live_of(dep, rv="11", generation=2)  # someone changed the spec
    assert mem.observe("MODIFIED", edited) is True
    assert mem.unchanged(dep) is None and mem.get(key_of(dep)) is None

    mem.wrote(dep, live_of(dep, rv="12"), owns_replicas=True)
    relabelled = live_of(dep, rv="13")
    label = next(iter(relabelled["metadata"]["labels"]))
    relabelled["metadata"]["labels"] = {**relabelled["metadata"]["labels"], label: "edited"}
    assert mem.observe("MODIFIED", relabelled) is True  # metadata drift, no generation bump
    assert mem.get(key_of(dep)) is None

    # What controllers add (the Deployment's revision annotation) or a user's own extra
    # label is not ours, so not drift.
    mem.wrote(dep, live_of(dep, rv="13"), owns_replicas=True)
    annotated = live_of(dep, rv="14")
    annotated["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2"}
    annotated["metadata"]["labels"] = {**annotated["metadata"]["labels"], "team": "x"}
    assert mem.observe("MODIFIED", annotated) is False
    assert mem.unchanged(dep) is not None

    mem.wrote(dep, live_of(dep, rv="14"), owns_replicas=True)
    assert mem.observe("DELETED", live_of(dep, rv="14")) is True
    assert mem.get(key_of(dep)) is None


def test_a_child_without_a_generation_counts_any_foreign_write_as_drift():
    mem = WrittenMemory()
    svc = builders.build_service(OWNER, SPEC)

    def live(rv: str) -> dict[str, Any]:
        obj = live_of(svc, rv=rv)
        del obj["metadata"]["generation"]  # Services have none
        return obj

    mem.wrote(svc, live("5"), owns_replicas=False)
    assert mem.observe("MODIFIED", live("5")) is False
    assert mem.observe("MODIFIED", live("6")) is True
    assert mem.get(key_of(svc)) is None


def test_an_object_never_written_here_or_replaced_under_the_same_name_is_looked_at():
    mem = WrittenMemory()
    dep = deployment()
    assert mem.observe("ADDED", live_of(dep)) is True
    mem.wrote(dep, live_of(dep, rv="10"), owns_replicas=True)
    replaced = live_of(dep, rv="10")
    replaced["metadata"]["uid"] = "another-uid"
    assert mem.observe("ADDED", replaced) is True
    assert mem.get(key_of(dep)) is None


def test_absent_children_and_forgetting_one_mlmodels_children():
    mem = WrittenMemory()
    hpa_key = ("autoscaling/v2", "HorizontalPodAutoscaler", "ns", "m")
    mem.absent(hpa_key)
    assert mem.get(hpa_key) is not None and mem.get(hpa_key).digest is None
    # It appears after all (someone created it): the watch drops "absent".
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "m", "namespace": "ns", "uid": "u", "resourceVersion": "1"}}
    assert mem.observe("ADDED", hpa) is True and mem.get(hpa_key) is None

    dep, cm = deployment(), builders.build_alert_configmap(OWNER, SPEC)
    other = builders.build_deployment(
        builders.Owner(name="m2", namespace="ns", uid="u2", generation=1), SPEC, "img:1")
    for m in (dep, cm, other):
        mem.wrote(m, live_of(m), owns_replicas=False)
    mem.forget_children("ns", {"m", builders.alert_configmap_name("m")})
    assert mem.get(key_of(dep)) is None and mem.get(key_of(cm)) is None
    assert mem.get(key_of(other)) is not None


def test_kinds_that_are_not_watched_are_never_remembered():
    mem = WrittenMemory()
    rule = builders.build_prometheus_rule(OWNER, SPEC)
    mem.wrote(rule, live_of(rule), owns_replicas=False)
    assert mem.unchanged(rule) is None and len(mem) == 0


def test_the_memory_is_bounded():
    mem = WrittenMemory(max_entries=3)
    for i in range(5):
        mem.absent(("v1", "Service", "ns", f"s{i}"))
    assert len(mem) <= 3


def test_an_event_from_before_our_last_write_is_not_taken_for_a_hand_edit():
    mem = WrittenMemory()
    dep = deployment()
    mem.wrote(dep, live_of(dep, rv="20", generation=2), owns_replicas=True)
    late = live_of(dep, rv="15", generation=1)  # the controller's status write of gen 1
    assert mem.observe("MODIFIED", late) is False
    assert mem.unchanged(dep) is not None


def test_an_apply_counts_as_an_update_only_when_spec_or_metadata_moved():
    from mlmodel_operator.written import Written, changed_by_write

    dep = deployment()
    before_live = live_of(dep, rv="20", generation=2)
    mem = WrittenMemory()
    mem.wrote(dep, before_live, owns_replicas=True)
    before = mem.get(key_of(dep))
    assert before is not None
    # A status write moved the resourceVersion, our no-op apply did not change the spec.
    assert not changed_by_write(before, live_of(dep, rv="23", generation=2))
    assert changed_by_write(before, live_of(dep, rv="24", generation=3))
    # Without generations (Service, ConfigMap) the resourceVersion decides.
    assert changed_by_write(Written(digest=None, resource_version="5"), {"metadata": {
        "resourceVersion": "6"}})
    assert not changed_by_write(Written(digest=None, resource_version="5"), {"metadata": {
        "resourceVersion": "5"}})


def test_the_kept_deployment_gives_the_same_status_as_the_whole_one():
    from mlmodel_operator.status import Observed, compute_status
    from mlmodel_operator.written import slim

    dep = live_of(deployment(), rv="30")
    dep["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                     "readyReplicas": 1, "availableReplicas": 1,
                     "conditions": [{"type": "Available", "status": "True"}]}

    def status_of(d: dict[str, Any]) -> dict[str, Any]:
        st = compute_status(Observed("m", "ns", 1, "1.0.0", d, {}, pods=[]))
        for c in st["conditions"]:
            c.pop("lastTransitionTime", None)
        return st

    kept = slim(dep)
    assert status_of(kept) == status_of(dep)
    assert len(json.dumps(kept)) < len(json.dumps(dep)) / 2


def test_the_remembered_kinds_are_exactly_the_watched_children():
    # An unwatched kind in memory would go stale silently; a watched one missing costs
    # requests. handlers.CHILD_RESOURCES registers the watches.
    from mlmodel_operator import handlers
    from mlmodel_operator.apply import _PATHS
    from mlmodel_operator.written import WATCHED_KINDS

    watched = {(f"{g}/{v}" if g else v, plural) for g, v, plural in handlers.CHILD_RESOURCES}
    assert {(api, _PATHS[(api, kind)][1]) for api, kind in WATCHED_KINDS} == watched
