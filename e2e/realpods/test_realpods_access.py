"""Who may call a model, on the real node (kube-router enforces NetworkPolicies there):
the operator's NetworkPolicy admits the MLModel's own namespace by default and refuses any
other; changing spec.serving.networkPolicy opens it, and `enabled: false` removes it.
Callers are pods of the runtime image (e2e/pod_clients.py); the test host itself (probes,
the operator's /health reads) is the node, which NetworkPolicies do not filter.
"""

from __future__ import annotations

import time

from e2e.helpers import wait_for
from e2e.pod_clients import client
from e2e.realpods.cluster import cluster_url
from e2e.realpods.models import example

MODEL = "tiny-xgb"


def test_default_policy_admits_only_the_models_namespace_until_the_spec_opens_it(
    realpods, on_real_node, pods, make_namespace, namespace
):
    configmap, mlmodel = example("xgboost-configmap.yaml")
    realpods.apply(configmap)
    realpods.apply(on_real_node(mlmodel))
    other = make_namespace("caller")
    pods.create(namespace, client("caller-in"))
    pods.create(other, client("caller-out"))
    realpods.wait_ready(MODEL, timeout=120)
    pods.wait_ready(namespace, "caller-in")
    pods.wait_ready(other, "caller-out")

    policy = realpods.get("networkpolicy", MODEL)
    assert policy is not None, "the operator wrote no NetworkPolicy"
    assert policy["metadata"]["ownerReferences"][0]["name"] == MODEL
    # a ConfigMap source: the pod connects nowhere
    assert policy["spec"].get("egress", []) == []
    (pod_ip,) = [p["status"]["podIP"] for p in realpods.list(
        "pods", f"app.kubernetes.io/instance={MODEL}") if p["status"].get("podIP")]
    via_service = f"{cluster_url(realpods, MODEL)}/v2/health/ready"
    via_pod = f"http://{pod_ip}:8000/v2/health/ready"

    # Closed by default: the own namespace answers, another is refused (both paths).
    wait_for(lambda: pods.request(namespace, "caller-in", via_service) == "ok", timeout=30,
             describe="the Service answering a caller in the model's namespace")
    pods.assert_answers(namespace, "caller-in", via_service, via_pod)
    pods.assert_refused(other, "caller-out", via_service, via_pod)

    # Open by spec: allowedFrom names the other namespace (and so no longer the own one).
    allow_other = {"serving": {"networkPolicy": {"allowedFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": other}}}]}}}
    took = pods.change_and_time(other, "caller-out", via_service, "ok",
                                lambda: realpods.patch_spec(MODEL, allow_other))
    print(f"\nallowedFrom change enforced (other namespace admitted) {took:.2f}s after the "
          "MLModel patch began (operator reconcile + kube-router sync)")
    pods.assert_answers(other, "caller-out", via_service, via_pod)
    pods.assert_refused(namespace, "caller-in", via_service, via_pod)

    # The documented opt-out: no policy at all, everybody answers.
    t0 = time.monotonic()
    took = pods.change_and_time(
        namespace, "caller-in", via_service, "ok",
        lambda: realpods.patch_spec(MODEL, {"serving": {"networkPolicy": {"enabled": False}}}))
    wait_for(lambda: realpods.get("networkpolicy", MODEL) is None, timeout=30,
             describe="the NetworkPolicy deleted after enabled: false")
    print(f"networkPolicy.enabled=false: policy deleted, own namespace answered {took:.2f}s "
          f"after the patch began ({time.monotonic() - t0:.1f}s to the deletion check)")
    pods.assert_answers(namespace, "caller-in", via_service, via_pod)
    pods.assert_answers(other, "caller-out", via_service, via_pod)
    realpods.wait_ready(MODEL, timeout=60)
