"""Pure helpers of apply.py: field ownership, the replicas hand-over to the HPA, children
left by a deleted MLModel of the same name."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException
from mlmodel_operator.apply import (
    FIELD_MANAGER,
    Kube,
    NotOwnedError,
    controlled_by,
    left_by_predecessor,
    needs_replicas_handover,
    owns_field,
    path_for,
)
from mlmodel_operator.written import WrittenMemory


def live(manager: str = FIELD_MANAGER, operation: str = "Apply", replicas: int | None = 3):
    fields = {"f:spec": {"f:template": {}, **({"f:replicas": {}} if replicas else {})}}
    return {
        "metadata": {
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}},
                },
                {"manager": manager, "operation": operation, "fieldsV1": fields},
            ]
        },
        "spec": {"replicas": replicas},
    }


AUTOSCALED = {"kind": "Deployment", "spec": {"template": {}}}
FIXED = {"kind": "Deployment", "spec": {"replicas": 2, "template": {}}}


def test_owns_field():
    assert owns_field(live(), FIELD_MANAGER, "spec", "replicas")
    assert not owns_field(live(), FIELD_MANAGER, "spec", "selector")
    assert not owns_field(live(operation="Update"), FIELD_MANAGER, "spec", "replicas")
    assert not owns_field(live(manager="kubectl"), FIELD_MANAGER, "spec", "replicas")
    assert not owns_field(live(replicas=None), FIELD_MANAGER, "spec", "replicas")


def test_handover_only_when_switching_to_autoscaling():
    assert needs_replicas_handover(AUTOSCALED, live())
    assert not needs_replicas_handover(FIXED, live())  # we keep setting replicas
    assert not needs_replicas_handover(AUTOSCALED, live(manager="someone-else"))  # done before
    assert not needs_replicas_handover({"kind": "Service", "spec": {}}, live())


def test_controlled_by_and_paths():
    obj = {
        "metadata": {
            "ownerReferences": [
                {"uid": "u1", "controller": True},
                {"uid": "u2", "controller": False},
            ]
        }
    }
    assert controlled_by(obj, "u1") and not controlled_by(obj, "u2")
    assert not controlled_by({"metadata": {}}, "u1")
    assert (
        path_for("apps/v1", "Deployment", "ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
    )
    assert path_for("v1", "ConfigMap", "ns") == "/api/v1/namespaces/ns/configmaps"


def _owned(uid: str, name: str = "fraud", kind: str = "MLModel",
           api_version: str = "serving.n1v1.io/v1alpha1") -> dict:
    return {"metadata": {"ownerReferences": [
        {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}]}}


def test_a_child_of_a_deleted_same_named_mlmodel_is_ours_to_replace():
    assert left_by_predecessor(_owned("old"), _owned("new"))
    # another API version of the same group is the same MLModel kind
    assert left_by_predecessor(_owned("old", api_version="serving.n1v1.io/v1"), _owned("new"))
    assert not left_by_predecessor(_owned("new"), _owned("new"))  # our own child
    assert not left_by_predecessor(_owned("old", name="other"), _owned("new"))
    assert not left_by_predecessor(_owned("old", kind="Deployment"), _owned("new"))
    assert not left_by_predecessor(_owned("old", api_version="example.com/v1"), _owned("new"))
    assert not left_by_predecessor({"metadata": {}}, _owned("new"))  # a user's object


class _Recorded(Kube):
    """Kube over an in-memory API: GETs from `objects`, PATCHes recorded (no cluster)."""

    def __init__(self, objects: dict[str, dict]) -> None:
        self.objects, self.patches = objects, []
        self._discovery = {}
        self.written = WrittenMemory()
        self.may_write = None

    def request(self, method, path, body=None, **_):  # type: ignore[override]
        if method == "GET":
            if path not in self.objects:
                raise ApiException(status=404, reason="Not Found")
            return self.objects[path]
        self.patches.append((method, path, body))
        return {"metadata": {"resourceVersion": "2"}}


DEP = "/apis/apps/v1/namespaces/ns/deployments/fraud"
MLM = "/apis/serving.n1v1.io/v1alpha1/namespaces/ns/mlmodels/fraud"


def _manifest(uid: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fraud", "namespace": "ns", **_owned(uid)["metadata"]}}


def test_adopts_a_predecessors_child_only_for_the_current_mlmodel():
    old_child = {"metadata": {"resourceVersion": "1", **_owned("old")["metadata"]},
                 "spec": {}}
    kube = _Recorded({DEP: old_child, MLM: {"metadata": {"uid": "new"}}})
    assert kube.apply(_manifest("new"), "new").action == "updated"
    assert [(m, p) for m, p, _ in kube.patches] == [("PATCH", DEP)]
    # A reconcile holding a stale body (the deleted MLModel's uid) takes nothing.
    stale = _Recorded({DEP: _owned("new") | {"spec": {}}, MLM: {"metadata": {"uid": "new"}}})
    with pytest.raises(NotOwnedError):
        stale.apply(_manifest("old"), "old")
    assert stale.patches == []
