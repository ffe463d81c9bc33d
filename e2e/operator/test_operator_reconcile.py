"""An MLModel becomes a serving stack whose status tells the truth (real API server,
controller-manager and scheduler; kwok plays the kubelet)."""

from __future__ import annotations

import json
import time

from prometheus_client.parser import text_string_to_metric_families

from e2e.helpers import wait_for

LABELS = "app.kubernetes.io/managed-by=n1v1-mlmodel-operator,serving.n1v1.io/model="


def _owner_refs(obj: dict, mlm: dict) -> list[dict]:
    return [
        r
        for r in obj["metadata"].get("ownerReferences", [])
        if r["uid"] == mlm["metadata"]["uid"] and r["kind"] == "MLModel" and r["controller"]
    ]


def _env(dep: dict) -> dict:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in c["env"]}


def test_children_with_owner_references_and_expected_spec(
    run_operator, mlmodels, namespace, base_mlmodel
):
    run_operator(namespace)
    mlmodels.apply(
        base_mlmodel(
            "iris",
            model={"sha256": "ab" * 32},
            serving={"replicas": 2, "resources": {"requests": {"cpu": "2"}}},
        )
    )
    dep = wait_for(lambda: mlmodels.get("deployment", "iris"), describe="Deployment iris")
    mlm = mlmodels.mlm("iris")
    svc = wait_for(lambda: mlmodels.get("service", "iris"), describe="Service iris")
    rules_kind, _, rules = wait_for(
        lambda: mlmodels.alert_rules_object("iris"), describe="alert rules object"
    )
    for child in (dep, svc, rules):
        assert len(_owner_refs(child, mlm)) == 1, child["metadata"]
        assert child["metadata"]["labels"]["serving.n1v1.io/model"] == "iris"
    assert mlmodels.get("hpa", "iris") is None  # fixed replicas: no autoscaler

    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    (runtime,) = pod["containers"]
    (fetch,) = pod["initContainers"]
    assert runtime["image"] == "n1v1-ml-serving:0.1.0"  # the operator's default image
    assert fetch["args"][:2] == ["-m", "serving_runtime.tools.fetch"]
    assert fetch["args"][-2:] == ["--sha256", "ab" * 32]
    env = _env(dep)
    assert (env["PRELOAD_MODELS"], env["MODELS_DIR"], env["PORT"]) == (
        "iris",
        "/app/models",
        "8000",
    )
    assert (env["WORKERS"], env["INFERENCE_THREADS"]) == ("2", "1")
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert pod["enableServiceLinks"] is False
    assert svc["spec"]["ports"][0]["port"] == 8000 and svc["spec"]["ports"][0]["name"] == "http"
    assert "MLModelHighLatencyP95" in mlmodels.alert_rules_text("iris")

    events = mlmodels.kubectl(
        "get", "events", "--field-selector", "involvedObject.kind=MLModel,involvedObject.name=iris"
    ).stdout
    # one Event per reconcile and verb, the NetworkPolicy first (written before the pods)
    assert "Created NetworkPolicy iris, Deployment iris, Service iris" in events, events
    # Usually no PrometheusRule CRD here: then the fallback is announced.
    assert ("PrometheusRuleCRDMissing" in events) == (rules_kind == "configmap"), events


def test_status_ready_and_kubectl_columns(run_operator, mlmodels, namespace, base_mlmodel):
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris", serving={"replicas": 2}))
    mlm = mlmodels.wait_ready("iris")
    st = mlm["status"]
    assert st["readyReplicas"] == 2 and st["replicas"] == 2
    assert st["servedVersion"] == "1.0.0"
    assert st["url"] == f"http://iris.{namespace}.svc.cluster.local:8000"
    serving = mlmodels.condition("iris", "ModelServing")
    assert serving["status"] == "True" and serving["observedGeneration"] == 1
    assert st["servedModel"] == "iris"  # no spec.model.name: the object's name
    wide = mlmodels.kubectl("get", "mlm", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:3] == ["NAME", "FRAMEWORK", "MODEL"] and wide[1].split()[2] == "iris"
    out = mlmodels.kubectl("get", "mlm").stdout
    header, row = out.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "FRAMEWORK",
        "VERSION",
        "SERVED",
        "READY",
        "STATUS",
        "URL",
        "AGE",
    ]
    assert row.split()[:7] == [
        "iris",
        "sklearn",
        "1.0.0",
        "1.0.0",
        "2/2",
        "Ready",
        f"http://iris.{namespace}.svc.cluster.local:8000",
    ]
    print(out)


def test_version_change_rolls_and_status_follows(run_operator, mlmodels, namespace, base_mlmodel):
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris"))
    mlmodels.wait_ready("iris")
    rs_before = {r["metadata"]["name"] for r in mlmodels.list("rs", LABELS + "iris")}
    mlmodels.patch_spec("iris", {"model": {"version": "2.0.0"}})
    mlm = mlmodels.wait_ready("iris")
    assert mlm["status"]["servedVersion"] == "2.0.0"
    assert mlm["status"]["observedGeneration"] == 2
    dep = mlmodels.get("deployment", "iris")
    assert _env(dep)["MODEL_VERSION"] == "2.0.0"
    assert "2.0.0" in dep["spec"]["template"]["spec"]["initContainers"][0]["args"]
    rs_after = {r["metadata"]["name"]: r for r in mlmodels.list("rs", LABELS + "iris")}
    new = set(rs_after) - rs_before
    assert len(new) == 1, "a version change makes exactly one new ReplicaSet"
    assert rs_after[new.pop()]["status"].get("readyReplicas") == 1
    assert all(rs_after[n]["spec"]["replicas"] == 0 for n in rs_before)


def test_stuck_rollout_is_never_ready(run_operator, mlmodels, namespace, base_mlmodel):
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris", serving={"progressDeadlineSeconds": 10}))
    mlmodels.wait_ready("iris")
    # kwok keeps pods whose image contains "never-ready" unready forever.
    mlmodels.patch_spec(
        "iris",
        {"model": {"version": "2.0.0"}, "serving": {"image": "n1v1-ml-serving:never-ready"}},
    )
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        c = mlmodels.condition("iris", "Ready")
        seen.append((c.get("status"), c.get("reason"), c.get("observedGeneration")))
        if c.get("reason") == "RolloutStuck" and c.get("observedGeneration") == 2:
            break
        time.sleep(1)
    assert ("False", "RolloutStuck", 2) in seen, seen
    assert not any(s == "True" and g == 2 for s, _, g in seen), seen
    mlm = mlmodels.mlm("iris")
    assert mlm["status"]["phase"] == "RolloutStuck"
    assert mlm["status"]["servedVersion"] == "1.0.0"  # the old pod still answers
    serving = mlmodels.condition("iris", "ModelServing")
    assert (serving["status"], serving["reason"]) == ("True", "ServingDuringRollout")
    assert mlm["status"]["readyReplicasText"] == "1/1"
    events = mlmodels.kubectl(
        "get", "events", "--field-selector", "involvedObject.kind=MLModel,involvedObject.name=iris"
    ).stdout
    assert "RolloutStuck" in events
    # Fixing the spec heals it.
    mlmodels.patch_spec("iris", {"serving": {"image": "n1v1-ml-serving:0.1.0"}})
    mlm = mlmodels.wait_ready("iris")
    assert mlm["status"]["servedVersion"] == "2.0.0"


def test_scale_subresource(run_operator, mlmodels, namespace, base_mlmodel):
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris"))
    mlmodels.wait_ready("iris")
    mlmodels.kubectl("scale", "mlm", "iris", "--replicas=3")
    wait_for(
        lambda: mlmodels.get("deployment", "iris")["spec"]["replicas"] == 3,
        describe="Deployment scaled to 3",
    )
    mlm = mlmodels.wait_ready("iris")
    assert mlm["status"]["readyReplicasText"] == "3/3"


def test_autoscaling_creates_and_removes_the_hpa(run_operator, mlmodels, namespace, base_mlmodel):
    run_operator(namespace)
    mlmodels.apply(
        base_mlmodel(
            "iris",
            serving={
                "autoscaling": {
                    "enabled": True,
                    "minReplicas": 2,
                    "maxReplicas": 4,
                    "targetLatencyMilliseconds": 30,
                }
            },
        )
    )
    hpa = wait_for(lambda: mlmodels.get("hpa", "iris"), describe="HPA iris")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 4
    # This operator has no Prometheus address, so the latency target cannot be met by KEDA:
    # the HPA scales on CPU and memory and the condition says why (e2e/monitoring runs KEDA).
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    mlmodels.wait_condition("iris", "LatencyAutoscaling", "False", "KEDANotEnabled")
    # The real HPA controller scales the Deployment to minReplicas; the operator never fights it.
    wait_for(
        lambda: mlmodels.get("deployment", "iris")["spec"]["replicas"] == 2,
        describe="HPA raised replicas to minReplicas",
        timeout=60,
    )
    mlmodels.patch_spec("iris", {"serving": {"autoscaling": {"enabled": False}, "replicas": 1}})
    wait_for(lambda: mlmodels.get("hpa", "iris") is None, describe="HPA removed")
    wait_for(
        lambda: mlmodels.get("deployment", "iris")["spec"]["replicas"] == 1,
        describe="fixed replicas back",
    )


def test_switching_to_autoscaling_keeps_the_replica_count(
    run_operator, mlmodels, namespace, base_mlmodel
):
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris", serving={"replicas": 3}))
    mlmodels.wait_ready("iris")
    mlmodels.patch_spec(
        "iris", {"serving": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5}}}
    )
    wait_for(lambda: mlmodels.get("hpa", "iris"), describe="HPA iris")
    # Without metrics the HPA never scales down, so 3 must stay 3: the operator handed the
    # field over instead of dropping it (which would reset the Deployment to 1 replica).
    seen = set()
    for _ in range(10):
        seen.add(mlmodels.get("deployment", "iris")["spec"]["replicas"])
        time.sleep(0.5)
    assert seen == {3}, seen
    dep = json.loads(
        mlmodels.kubectl("get", "deployment", "iris", "-o", "json", "--show-managed-fields").stdout
    )
    owners = {
        m["manager"]
        for m in dep["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})
    }
    assert "n1v1-mlmodel-operator" not in owners, owners


def test_deleted_and_hand_edited_children_are_repaired(
    run_operator, mlmodels, namespace, base_mlmodel
):
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris"))
    mlmodels.wait_ready("iris")
    generation = mlmodels.mlm("iris")["metadata"]["generation"]

    old_uid = mlmodels.get("service", "iris")["metadata"]["uid"]
    mlmodels.kubectl("delete", "service", "iris")
    wait_for(
        lambda: (s := mlmodels.get("service", "iris")) and s["metadata"]["uid"] != old_uid,
        describe="Service recreated",
    )

    mlmodels.kubectl("set", "env", "deployment/iris", "-c", "runtime", "MODEL_VERSION=9.9.9")
    mlmodels.kubectl(
        "patch",
        "deployment",
        "iris",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/template/spec/containers/0/securityContext/'
        'readOnlyRootFilesystem","value":false}]',
    )
    wait_for(
        lambda: (
            _env(mlmodels.get("deployment", "iris"))["MODEL_VERSION"] == "1.0.0"
            and mlmodels.get("deployment", "iris")["spec"]["template"]["spec"]["containers"][0][
                "securityContext"
            ]["readOnlyRootFilesystem"]
            is True
        ),
        describe="hand edits of the Deployment reverted",
    )

    kind, obj_name, _ = mlmodels.alert_rules_object("iris")
    mlmodels.kubectl("delete", kind, obj_name)
    wait_for(lambda: mlmodels.alert_rules_object("iris"), describe="alert rules back", timeout=90)
    kind, obj_name, _ = mlmodels.alert_rules_object("iris")
    emptied = (
        '{"data":{"rules.yaml":"groups: []\\n"}}'
        if kind == "configmap"
        else '{"spec":{"groups":[]}}'
    )
    mlmodels.kubectl("patch", kind, obj_name, "--type=merge", "-p", emptied)
    wait_for(
        lambda: "MLModelServiceDown" in (mlmodels.alert_rules_text("iris") or ""),
        describe="alert rules edit reverted",
        timeout=90,
    )

    mlmodels.wait_ready("iris")
    assert mlmodels.mlm("iris")["metadata"]["generation"] == generation  # MLModel untouched


def test_deleting_the_mlmodel_garbage_collects_children(
    run_operator, mlmodels, namespace, base_mlmodel
):
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris", serving={"autoscaling": {"enabled": True}}))
    mlmodels.wait_ready("iris")
    assert mlmodels.get("hpa", "iris") is not None
    mlmodels.kubectl("delete", "mlm", "iris", "--wait=true")

    def gone():
        left = [
            k
            for k, n in (
                ("deployment", "iris"),
                ("service", "iris"),
                ("hpa", "iris"),
            )
            if mlmodels.get(k, n) is not None
        ]
        left += ["alert rules"] if mlmodels.alert_rules_object("iris") else []
        left += [p["metadata"]["name"] for p in mlmodels.list("pods", LABELS + "iris")]
        return not left or None

    wait_for(
        gone,
        timeout=90,
        describe="every child garbage-collected",
        observe=lambda: mlmodels.kubectl("get", "all,cm").stdout,
    )


def test_operator_metrics_and_health(run_operator, mlmodels, namespace, base_mlmodel):
    op = run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris"))
    mlmodels.wait_ready("iris")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(op.metrics())
        for s in f.samples
    }
    ok = sum(
        v
        for (n, lbl), v in samples.items()
        if n == "mlmodel_operator_reconciles_total" and ("result", "ok") in lbl
    )
    assert ok >= 1
    assert any(n == "mlmodel_operator_reconcile_duration_seconds_bucket" for n, _ in samples)
    assert (
        samples[("mlmodel_operator_model_ready", (("name", "iris"), ("namespace", namespace)))]
        == 1.0
    )
    assert op.healthy()


def test_pods_that_cannot_be_created_are_reported(run_operator, mlmodels, namespace, base_mlmodel):
    # A quota of zero pods: the ReplicaSet's creates are refused by admission.
    mlmodels.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods"},
            "spec": {"hard": {"pods": "0"}},
        }
    )
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris"))
    mlm = mlmodels.wait_condition("iris", "Ready", "False", "ReplicaFailure", timeout=120)
    ready = next(c for c in mlm["status"]["conditions"] if c["type"] == "Ready")
    assert "exceeded quota" in ready["message"], ready
    assert mlmodels.condition("iris", "ModelServing")["status"] == "False"


def test_a_foreign_object_with_a_child_name_is_left_alone(
    run_operator, mlmodels, namespace, base_mlmodel
):
    mlmodels.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "iris"},
            "spec": {
                "selector": {"app": "someone-else"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        }
    )
    run_operator(namespace)
    mlmodels.apply(base_mlmodel("iris"))
    mlm = mlmodels.wait_condition("iris", "Ready", "False", "ChildNotOwned")
    ready = next(c for c in mlm["status"]["conditions"] if c["type"] == "Ready")
    assert f"Service {namespace}/iris" in ready["message"]
    svc = mlmodels.get("service", "iris")
    assert svc["spec"]["selector"] == {"app": "someone-else"}
    assert not svc["metadata"].get("ownerReferences")
