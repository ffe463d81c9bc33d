"""Builders: every spec option that changes a manifest, checked on the plain dicts."""

from __future__ import annotations

import copy

import pytest
import yaml
from mlmodel_operator import builders
from mlmodel_operator.spec import parse_spec

OWNER = builders.Owner(name="fraud", namespace="team-a", uid="1234-uid", generation=3)
IMAGE = "n1v1-ml-serving:0.1.0"
BASE = {"model": {"framework": "xgboost", "version": "1.2.0", "uri": "https://h.example/m.tar.gz"}}


def spec(**over):
    raw = copy.deepcopy(BASE)
    for section, values in over.items():
        raw.setdefault(section, {}).update(values)
    return parse_spec(raw)


def deployment(**over):
    return builders.build_deployment(OWNER, spec(**over), IMAGE)


def pod(dep):
    return dep["spec"]["template"]["spec"]


def runtime(dep):
    (c,) = pod(dep)["containers"]
    assert c["name"] == "runtime"
    return c


def fetch(dep):
    (c,) = pod(dep)["initContainers"]
    assert c["name"] == "fetch-model"
    return c


def env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_every_child_has_contract_labels_and_controller_owner_reference():
    s = spec(serving={"autoscaling": {"enabled": True}})
    children = [
        builders.build_deployment(OWNER, s, IMAGE),
        builders.build_service(OWNER, s),
        builders.build_hpa(OWNER, s),
        builders.build_prometheus_rule(OWNER, s),
        builders.build_alert_configmap(OWNER, s),
    ]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["labels"] == {
            **meta["labels"],
            "app.kubernetes.io/name": "n1v1-ml-serving",
            "app.kubernetes.io/instance": "fraud",
            "app.kubernetes.io/managed-by": "n1v1-mlmodel-operator",
            "serving.n1v1.io/model": "fraud",
        }
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "serving.n1v1.io/v1alpha1",
                "kind": "MLModel",
                "name": "fraud",
                "uid": "1234-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert [c["metadata"]["name"] for c in children] == ["fraud"] * 4 + ["fraud-alert-rules"]


def test_default_deployment():
    dep = deployment()
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["selector"]["matchLabels"] == builders.selector_labels("fraud")
    tmpl_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert builders.selector_labels("fraud").items() <= tmpl_labels.items()
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert dep["spec"]["progressDeadlineSeconds"] == 600
    c = runtime(dep)
    assert c["image"] == IMAGE
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"},
                          {"name": "grpc", "containerPort": 8081, "protocol": "TCP"}]
    assert {"name": "GRPC_PORT", "value": "8081"} in c["env"]
    e = env(c)
    assert e["MODELS_DIR"] == "/app/models"
    assert e["PRELOAD_MODELS"] == "fraud"
    assert e["PORT"] == "8000"
    assert e["MODEL_VERSION"] == "1.2.0"
    assert e["ALLOW_UNSAFE_LOADING"] == "false"
    assert "MODEL_SHA256" not in e
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": builders.PRESTOP_SLEEP_SECONDS}}
    assert pod(dep)["terminationGracePeriodSeconds"] > builders.PRESTOP_SLEEP_SECONDS
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8000"
    f = fetch(dep)
    assert f["image"] == IMAGE
    assert f["command"] == ["python"]
    assert f["args"] == [
        "-m",
        "serving_runtime.tools.fetch",
        "--uri",
        "https://h.example/m.tar.gz",
        "--dest",
        "/app/models",
        "--name",
        "fraud",
        "--framework",
        "xgboost",
        "--version",
        "1.2.0",
    ]
    assert "envFrom" not in f
    assert {v["name"] for v in pod(dep)["volumes"]} == {"models", "tmp"}


def test_pod_meets_restricted_pod_security_and_read_only_root():
    p = pod(deployment())
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["securityContext"]["runAsUser"] == 10001
    assert p["automountServiceAccountToken"] is False
    assert p["enableServiceLinks"] is False
    assert "hostNetwork" not in p and "hostPID" not in p
    for c in p["containers"] + p["initContainers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "/tmp" in mounts and "/app/models" in mounts
    assert {
        m["mountPath"]: m.get("readOnly", False) for m in runtime(deployment())["volumeMounts"]
    } == {"/app/models": True, "/tmp": False}
    allowed = {"emptyDir", "configMap", "persistentVolumeClaim", "secret", "projected"}
    for v in p["volumes"]:
        assert set(v) - {"name"} <= allowed


def test_image_and_pull_policy_override():
    dep = deployment(
        serving={"image": "registry.local/rt@sha256:" + "a" * 64, "imagePullPolicy": "Always"}
    )
    for c in (runtime(dep), fetch(dep)):
        assert c["image"] == "registry.local/rt@sha256:" + "a" * 64
        assert c["imagePullPolicy"] == "Always"


def test_sha256_is_passed_to_fetch_and_into_the_template():
    digest = "0123456789abcdef" * 4
    dep = deployment(model={"sha256": digest})
    assert fetch(dep)["args"][-2:] == ["--sha256", digest]
    assert env(runtime(dep))["MODEL_SHA256"] == digest


def test_version_uri_or_sha_change_changes_the_pod_template():
    base = deployment()["spec"]["template"]
    for over in (
        {"version": "1.3.0"},
        {"uri": "https://h.example/other.tar.gz"},
        {"sha256": "f" * 64},
    ):
        assert deployment(model=over)["spec"]["template"] != base, over
    assert deployment()["spec"]["template"] == base  # and builders are deterministic


def test_pvc_uri_mounts_the_claim_read_only():
    dep = deployment(model={"uri": "pvc://model-store/fraud/1.2.0/model.ubj"})
    vols = {v["name"]: v for v in pod(dep)["volumes"]}
    assert vols["model-source"] == {
        "name": "model-source",
        "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True},
    }
    f = fetch(dep)
    assert (
        f["args"][f["args"].index("--uri") + 1] == "file:///mnt/model-source/fraud/1.2.0/model.ubj"
    )
    src = [m for m in f["volumeMounts"] if m["name"] == "model-source"]
    assert src == [{"name": "model-source", "mountPath": "/mnt/model-source", "readOnly": True}]
    assert all(m["name"] != "model-source" for m in runtime(dep)["volumeMounts"])


@pytest.mark.parametrize(
    ("uri", "fetch_uri"),
    [
        ("configmap://tiny", "file:///mnt/model-source"),
        ("configmap://tiny/model.json", "file:///mnt/model-source/model.json"),
    ],
)
def test_configmap_uri_mounts_the_configmap(uri, fetch_uri):
    dep = deployment(model={"uri": uri})
    vols = {v["name"]: v for v in pod(dep)["volumes"]}
    assert vols["model-source"] == {"name": "model-source", "configMap": {"name": "tiny"}}
    args = fetch(dep)["args"]
    assert args[args.index("--uri") + 1] == fetch_uri


def test_s3_uri_goes_to_fetch_as_is_with_credentials_only_there():
    dep = deployment(model={"uri": "s3://models/fraud.tar.gz", "credentialsSecret": "s3-creds"})
    args = fetch(dep)["args"]
    assert args[args.index("--uri") + 1] == "s3://models/fraud.tar.gz"
    assert fetch(dep)["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "envFrom" not in runtime(dep)
    assert all(v["name"] != "model-source" for v in pod(dep)["volumes"])


@pytest.mark.parametrize("ca, path", [
    ({"configMap": "internal-ca"}, "/etc/n1v1/ca-bundle/ca.crt"),
    ({"configMap": "internal-ca", "key": "bundle.pem"}, "/etc/n1v1/ca-bundle/bundle.pem"),
])
def test_ca_bundle_reaches_the_fetch_step_only(ca, path):
    dep = deployment(model={"uri": "https://store.internal/m.tar.gz", "caBundle": ca})
    assert fetch(dep)["env"] == [{"name": "FETCH_CA_BUNDLE", "value": path}]
    assert {"name": "ca-bundle", "mountPath": "/etc/n1v1/ca-bundle", "readOnly": True} in fetch(
        dep)["volumeMounts"]
    # optional: a missing ConfigMap fails the fetch with a message, not the volume mount
    assert {"name": "ca-bundle", "configMap": {"name": "internal-ca", "optional": True}} in pod(
        dep)["volumes"]
    assert "FETCH_CA_BUNDLE" not in env(runtime(dep))
    assert all(m["name"] != "ca-bundle" for m in runtime(dep)["volumeMounts"])


def test_no_ca_bundle_no_volume():
    dep = deployment()
    assert "env" not in fetch(dep)
    assert all(v["name"] != "ca-bundle" for v in pod(dep)["volumes"])


def test_allow_unsafe_loading():
    assert (
        env(runtime(deployment(model={"allowUnsafeLoading": True})))["ALLOW_UNSAFE_LOADING"]
        == "true"
    )


@pytest.mark.parametrize(
    ("resources", "workers", "expected"),
    [
        ({}, None, ("1", "1")),  # default request 500m -> 1 CPU
        ({"requests": {"cpu": "2"}}, None, ("2", "1")),
        ({"requests": {"cpu": "1"}, "limits": {"cpu": "4"}}, None, ("4", "1")),  # limit wins
        ({"requests": {"cpu": "3500m"}}, None, ("3", "1")),  # rounded down
        ({"requests": {"cpu": "4"}}, 1, ("1", "4")),  # one worker gets every CPU as threads
        ({"requests": {"cpu": "4"}}, 2, ("2", "2")),
        ({"requests": {"cpu": "1"}}, 3, ("3", "1")),  # at least one thread
    ],
)
def test_workers_and_threads_follow_the_cpus(resources, workers, expected):
    serving = {"resources": resources} if resources else {}
    if workers:
        serving["workers"] = workers
    e = env(runtime(deployment(serving=serving)))
    assert (e["WORKERS"], e["INFERENCE_THREADS"]) == expected


def test_user_env_is_added_and_may_override_threads():
    dep = deployment(
        serving={
            "env": [
                {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "INFERENCE_THREADS", "value": "7"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ]
        }
    )
    names = [e["name"] for e in runtime(dep)["env"]]
    assert names.count("INFERENCE_THREADS") == 1
    e = env(runtime(dep))
    assert e["LOG_LEVEL"] == "debug" and e["INFERENCE_THREADS"] == "7"
    assert e["TOKEN"] == {"secretKeyRef": {"name": "s", "key": "k"}}


def test_node_selector_and_tolerations():
    dep = deployment(
        serving={
            "nodeSelector": {"pool": "inference"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ],
        }
    )
    assert pod(dep)["nodeSelector"] == {"pool": "inference"}
    assert pod(dep)["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ]
    assert "nodeSelector" not in pod(deployment()) and "tolerations" not in pod(deployment())


def test_fixed_replicas_and_progress_deadline():
    dep = deployment(serving={"replicas": 3, "progressDeadlineSeconds": 30})
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["progressDeadlineSeconds"] == 30
    assert builders.build_hpa(OWNER, spec(serving={"replicas": 3})) is None


def test_autoscaling_leaves_replicas_to_the_hpa():
    s = spec(
        serving={
            "replicas": 3,
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8},
        }
    )
    assert "replicas" not in builders.build_deployment(OWNER, s, IMAGE)["spec"]
    hpa = builders.build_hpa(OWNER, s)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fraud",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        },
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        },
    ]


def test_scale_down_stabilization_follows_the_spec():
    s = spec(serving={"autoscaling": {"enabled": True, "scaleDownStabilizationSeconds": 20}})
    assert builders.build_hpa(OWNER, s)["spec"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 20}}


def test_the_hpa_never_scales_on_latency():
    # latency needs KEDA (build_scaled_object); the HPA is the CPU/memory fallback
    s = spec(serving={"autoscaling": {"enabled": True, "targetLatencyMilliseconds": 25,
                                      "targetCPUUtilizationPercentage": 60}})
    metrics = builders.build_hpa(OWNER, s)["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics] == ["cpu", "memory"]
    assert metrics[0]["resource"]["target"]["averageUtilization"] == 60


MONITORING = builders.Monitoring("http://prometheus.monitoring.svc:9090", "30s", 5)


def test_scaled_object_scales_on_p95_latency_cpu_and_memory():
    s = spec(serving={"autoscaling": {
        "enabled": True, "minReplicas": 1, "maxReplicas": 4, "targetLatencyMilliseconds": 25,
        "targetCPUUtilizationPercentage": 60, "scaleDownStabilizationSeconds": 20}})
    so = builders.build_scaled_object(OWNER, s, MONITORING)
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert so["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    sp = so["spec"]
    assert sp["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "fraud"}
    assert (sp["minReplicaCount"], sp["maxReplicaCount"], sp["pollingInterval"]) == (1, 4, 5)
    assert sp["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 20}}
    latency, cpu, memory = sp["triggers"]
    assert (latency["type"], latency["metricType"]) == ("prometheus", "Value")
    assert latency["metadata"]["serverAddress"] == "http://prometheus.monitoring.svc:9090"
    assert latency["metadata"]["threshold"] == "0.025"  # seconds, as the histogram
    q = latency["metadata"]["query"]
    assert q == (
        '(histogram_quantile(0.95, sum by (le) (rate(inference_latency_seconds_bucket'
        '{namespace="team-a",model_name="fraud"}[30s]))) >= 0) or vector(0)')
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}
    assert memory == {"type": "memory", "metricType": "Utilization", "metadata": {"value": "80"}}


def test_scaled_object_uses_the_served_name():
    s = spec(model={"framework": "lightgbm", "name": "your_model", "version": "1",
                    "uri": "https://h.example/m"},
             serving={"autoscaling": {"enabled": True, "targetLatencyMilliseconds": 5}})
    (latency, *_) = builders.build_scaled_object(OWNER, s, MONITORING)["spec"]["triggers"]
    assert 'model_name="your_model"' in latency["metadata"]["query"]


def test_no_scaled_object_without_a_latency_target():
    assert builders.build_scaled_object(
        OWNER, spec(serving={"autoscaling": {"enabled": True}}), MONITORING) is None
    assert builders.build_scaled_object(OWNER, spec(serving={"autoscaling": {
        "enabled": False, "targetLatencyMilliseconds": 5}}), MONITORING) is None


def test_pod_monitor_scrapes_the_models_pods():
    pm = builders.build_pod_monitor(OWNER, spec())
    assert (pm["apiVersion"], pm["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert pm["spec"]["selector"] == {"matchLabels": builders.selector_labels("fraud")}
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    pod = builders.build_deployment(OWNER, spec(), "img")["spec"]["template"]["spec"]
    ports = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
    assert ep["port"] in ports and ep["path"] == "/metrics"


def test_service():
    svc = builders.build_service(OWNER, spec())
    assert svc["spec"]["selector"] == builders.selector_labels("fraud")
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "kubernetes.io/h2c"},
    ]
    # every Service port reaches a named container port
    pod = builders.build_deployment(OWNER, spec(), "img")["spec"]["template"]["spec"]
    named = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= named
    assert builders.service_url("fraud", "team-a") == "http://fraud.team-a.svc.cluster.local:8000"


def _rules(s):
    (group,) = builders.build_alert_rules(OWNER, s)["groups"]
    return {r["alert"]: r for r in group["rules"]}


def test_default_alert_rules():
    rules = _rules(spec())
    assert set(rules) == {
        "MLModelHighLatencyP95",
        "MLModelHighErrorRate",
        "MLModelServiceDown",
        "MLModelLoadFailures",
    }
    sel = 'namespace="team-a",model_name="fraud"'
    assert rules["MLModelHighLatencyP95"]["expr"] == (
        f"histogram_quantile(0.95, sum by (le) (rate(inference_latency_seconds_bucket{{{sel}}}"
        "[5m]))) > 0.1"
    )
    assert rules["MLModelHighErrorRate"]["expr"].endswith("> 0.01")
    # refused requests (4xx) count: the engine got no prediction
    assert 'status=~"client_error|server_error"' in rules["MLModelHighErrorRate"]["expr"]
    assert (
        rules["MLModelServiceDown"]["expr"]
        == 'absent(up{namespace="team-a",pod=~"fraud-[a-z0-9]+-[a-z0-9]+"} == 1)'
    )
    assert (
        rules["MLModelLoadFailures"]["expr"]
        == f"max by (namespace, pod) (model_load_failed{{{sel}}}) > 0"
    )
    for r in rules.values():
        assert r["labels"]["namespace"] == "team-a" and r["labels"]["mlmodel"] == "fraud"
        assert r["annotations"]["summary"]
    assert rules["MLModelServiceDown"]["labels"]["severity"] == "critical"
    assert rules["MLModelHighLatencyP95"]["for"] == "5m"


def test_alert_thresholds_for_and_labels_follow_the_spec():
    rules = _rules(
        spec(
            alerting={
                "latencyP95ThresholdMilliseconds": 250,
                "errorRateThresholdPercent": 2.5,
                "for": "2m",
                "labels": {"team": "risk"},
            }
        )
    )
    assert rules["MLModelHighLatencyP95"]["expr"].endswith("> 0.25")
    assert rules["MLModelHighErrorRate"]["expr"].endswith("> 0.025")
    assert rules["MLModelHighLatencyP95"]["for"] == "2m"
    assert all(r["labels"]["team"] == "risk" for r in rules.values())


def test_prometheus_rule_and_configmap_carry_the_same_rules():
    s = spec()
    pr = builders.build_prometheus_rule(OWNER, s)
    assert pr["apiVersion"] == "monitoring.coreos.com/v1" and pr["kind"] == "PrometheusRule"
    cm = builders.build_alert_configmap(OWNER, s)
    assert cm["metadata"]["name"] == "fraud-alert-rules"
    assert yaml.safe_load(cm["data"]["rules.yaml"]) == pr["spec"]


def test_error_rate_alert_may_count_server_errors_only():
    s = spec(alerting={"countClientErrors": False})
    (group,) = builders.build_alert_rules(OWNER, s)["groups"]
    (expr,) = [r["expr"] for r in group["rules"] if r["alert"] == "MLModelHighErrorRate"]
    assert 'status=~"server_error"}' in expr and "client_error" not in expr
