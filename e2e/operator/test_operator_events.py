"""Events the operator records, against the real API server."""

from __future__ import annotations

import logging

from mlmodel_operator.apply import Kube

from e2e.helpers import wait_for

HOLD = "n1v1.io/e2e-hold"  # a finalizer nobody serves: keeps the namespace Terminating


def _owner(namespace: str) -> dict:
    return {"metadata": {"name": "iris", "namespace": namespace, "uid": "0000-e2e"}}


def test_an_event_into_a_terminating_namespace_is_not_reported_as_a_permission_problem(
    k8s, namespace, caplog
):
    kube = Kube(k8s.api_client)
    kube.event(_owner(namespace), "Normal", "Probe", "namespace alive")
    events = k8s.core.list_namespaced_event(namespace).items
    assert [e.reason for e in events] == ["Probe"]

    k8s.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "hold", "finalizers": [HOLD]}}
    )
    k8s.core.delete_namespace(namespace)
    wait_for(
        lambda: k8s.core.read_namespace(namespace).status.phase == "Terminating",
        describe=f"namespace {namespace} Terminating",
    )
    try:
        with caplog.at_level(logging.DEBUG, logger="mlmodel_operator.apply"):
            kube.event(_owner(namespace), "Normal", "RolloutInProgress", "late")
        (record,) = [r for r in caplog.records if "could not record event" in r.getMessage()]
        # The API server said 403; the log says why, below WARNING (the chart e2e counts
        # WARNING-level 403s as RBAC gaps).
        assert "403" in record.getMessage()
        assert "being terminated" in record.getMessage()
        assert record.levelno == logging.DEBUG
    finally:
        k8s.core.patch_namespaced_config_map("hold", namespace, {"metadata": {"finalizers": []}})
