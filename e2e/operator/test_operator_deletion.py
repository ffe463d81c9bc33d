"""No finalizer on MLModels: deleting one, or its namespace, never waits for the operator."""

from __future__ import annotations

import signal
import time

from e2e.helpers import kubectl, wait_for
from e2e.mlmodels import MLModels

OLD_FINALIZER = "serving.n1v1.io/kopf-finalizer"  # what operators before issue 18 added


def _finalizers(mlmodels, name: str) -> list[str] | None:
    body = mlmodels.get("mlmodel", name)
    return None if body is None else body["metadata"].get("finalizers") or []


def test_mlmodels_get_no_finalizer_and_lose_the_old_one(
    run_operator, mlmodels, namespace, base_mlmodel
):
    # One left by an older operator version, applied before this one starts.
    legacy = base_mlmodel("legacy")
    legacy["metadata"]["finalizers"] = [OLD_FINALIZER]
    mlmodels.apply(legacy)
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("fresh"))
    mlmodels.wait_ready("fresh")
    mlmodels.wait_ready("legacy")
    assert _finalizers(mlmodels, "fresh") == []
    wait_for(lambda: _finalizers(mlmodels, "legacy") == [], timeout=30,
             describe="the old finalizer to be removed")


def test_deleting_an_mlmodel_or_its_namespace_while_the_operator_is_down(
    run_operator, kubeconfig, k8s, make_namespace, base_mlmodel
):
    ns = make_namespace()
    models = MLModels(kubeconfig, k8s, ns)
    op = run_operator(ns)
    for name in ("one", "two"):
        models.apply(base_mlmodel(name))
    models.wait_ready("one")
    models.wait_ready("two")
    op.stop(signal.SIGKILL)

    t0 = time.monotonic()
    models.kubectl("delete", "mlmodel", "one", "--timeout=30s")
    assert models.get("mlmodel", "one") is None
    deleted_one = time.monotonic() - t0
    # Its children go through garbage collection, with nobody reconciling.
    wait_for(lambda: models.get("deployment", "one") is None, timeout=60,
             describe="the garbage collector to remove the Deployment")

    t0 = time.monotonic()
    kubectl("delete", "namespace", ns, "--timeout=90s", kubeconfig=kubeconfig)
    gone = time.monotonic() - t0
    r = kubectl("get", "namespace", ns, kubeconfig=kubeconfig, check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr
    print(f"operator down: MLModel deleted in {deleted_one:.1f}s, its namespace in {gone:.1f}s")
