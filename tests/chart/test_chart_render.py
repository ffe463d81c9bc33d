"""`helm template` output for the value combinations that change what gets installed."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.chart_helpers import (
    NAMESPACE,
    RELEASE,
    container,
    env_of,
    find,
    one,
    render,
    rule_set,
    template,
)

FULLNAME = f"{RELEASE}-mlmodel-operator"
ALLOWED_VOLUME_TYPES = {  # restricted Pod Security profile
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}


def restricted_violations(pod_spec: dict) -> list[str]:
    """What the restricted Pod Security Standard would reject in this pod spec."""
    bad = []
    psc = pod_spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            bad.append(key)
    for vol in pod_spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            bad.append(f"volume {vol['name']} type {kinds}")
    for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            bad.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{c['name']}: allowPrivilegeEscalation not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad.append(f"{c['name']}: capabilities not dropping ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{c['name']}: adds capabilities")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append(f"{c['name']}: runAsNonRoot not set")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{c['name']}: runs as UID 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{c['name']}: seccompProfile {seccomp}")
    return bad


@pytest.fixture(scope="module")
def default_docs():
    return render()


def test_default_objects(default_docs):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default_docs)
    assert kinds == sorted([
        ("ServiceAccount", FULLNAME),
        ("ClusterRole", FULLNAME),
        ("ClusterRoleBinding", FULLNAME),
        ("Deployment", FULLNAME),
        ("Service", f"{FULLNAME}-metrics"),
        ("Role", f"{FULLNAME}-leader-election"),
        ("RoleBinding", f"{FULLNAME}-leader-election"),
    ])
    for d in default_docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE, d["kind"]


def test_default_deployment_settings(default_docs):
    dep = one(default_docs, "Deployment")
    c = container(default_docs)
    assert c["image"] == "n1v1-mlmodel-operator:0.1.0"
    assert dep["spec"]["replicas"] == 1
    # Leader election: the new pod stands by until the old one hands the Lease over.
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert env_of(default_docs) == {
        "OPERATOR_NAMESPACES": "",
        "OPERATOR_RUNTIME_IMAGE": "n1v1-ml-serving:0.1.0",
        "OPERATOR_LEADER_ELECTION": "true",
        "OPERATOR_LEADER_ELECTION_NAMESPACE": NAMESPACE,
        "OPERATOR_LEADER_ELECTION_LEASE": FULLNAME,
        "OPERATOR_LEASE_DURATION_SECONDS": "10",
        "OPERATOR_RENEW_DEADLINE_SECONDS": "7",
        "OPERATOR_RETRY_PERIOD_SECONDS": "2",
        "OPERATOR_HEALTH_PORT": "8080",
        "OPERATOR_METRICS_PORT": "9090",
        "OPERATOR_LOG_LEVEL": "info",
        # every MLModel's NetworkPolicy: who scrapes, which pods are this operator
        "OPERATOR_SCRAPE_NAMESPACES": "monitoring",
        "OPERATOR_POD_LABELS": "app.kubernetes.io/name=mlmodel-operator,"
                               "app.kubernetes.io/instance=mlm",
    }
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(default_docs, "ServiceAccount")["metadata"]["name"]


def test_default_pod_meets_restricted_profile(default_docs):
    dep = one(default_docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    c = container(default_docs)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (contracts)
    tmp = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert tmp == {"tmp": "/tmp"}
    (vol,) = pod["volumes"]
    assert vol["name"] == "tmp" and "emptyDir" in vol


def test_restricted_checker_catches_a_violation():
    # The checker above must be able to say no, or the test before it proves nothing.
    docs = render({"securityContext": {"allowPrivilegeEscalation": True,
                                       "capabilities": {"drop": ["ALL"]}}})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod) == ["operator: allowPrivilegeEscalation not false"]


def test_selectors_are_stable_and_match(default_docs):
    dep = one(default_docs, "Deployment")
    selector = dep["spec"]["selector"]["matchLabels"]
    # A Deployment selector is immutable: nothing that changes between chart versions.
    assert selector == {
        "app.kubernetes.io/name": "mlmodel-operator",
        "app.kubernetes.io/instance": RELEASE,
    }
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    svc = one(default_docs, "Service")
    assert svc["spec"]["selector"] == selector
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    for d in default_docs:
        assert d["metadata"]["labels"]["helm.sh/chart"] == "mlmodel-operator-0.1.0"


def test_release_named_like_the_chart_is_not_doubled():
    docs = render(release="mlmodel-operator")
    assert one(docs, "Deployment")["metadata"]["name"] == "mlmodel-operator"


def test_long_release_names_stay_valid():
    docs = render(release="a" * 53)
    for d in docs:
        assert len(d["metadata"]["name"]) <= 63, d["metadata"]["name"]


def test_overrides_reach_the_container():
    docs = render({
        "image": {"repository": "registry.local/op", "tag": "9.9.9", "pullPolicy": "Always"},
        "operator": {"runtimeImage": "registry.local/rt:1", "logLevel": "debug",
                     "healthPort": 18080, "metricsPort": 19090,
                     "extraEnv": [{"name": "EXTRA", "value": "1"}]},
        "podLabels": {"team": "ml"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
    })
    c = container(docs)
    assert c["image"] == "registry.local/op:9.9.9" and c["imagePullPolicy"] == "Always"
    env = env_of(docs)
    assert env["OPERATOR_RUNTIME_IMAGE"] == "registry.local/rt:1"
    assert env["OPERATOR_LOG_LEVEL"] == "debug"
    assert env["OPERATOR_HEALTH_PORT"] == "18080"
    assert env["OPERATOR_METRICS_PORT"] == "19090"
    assert env["EXTRA"] == "1"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "health": 18080, "metrics": 19090}
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"][0]["key"] == "k"
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 19090


def test_watch_namespaces_gives_roles_per_namespace():
    docs = render({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    assert env_of(docs)["OPERATOR_NAMESPACES"] == "team-a,team-b"
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    for ns in ("team-a", "team-b"):
        role = one(docs, "Role", FULLNAME, ns)
        triples = rule_set(role["rules"])
        assert ("serving.n1v1.io", "mlmodels", "watch") in triples
        assert ("apps", "deployments", "create") in triples
        binding = one(docs, "RoleBinding", FULLNAME, ns)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                      "kind": "Role", "name": FULLNAME}
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    # Nothing at all is granted cluster-wide when namespaces are listed.
    assert find(docs, "ClusterRole") == [] and find(docs, "ClusterRoleBinding") == []
    # One per watched namespace, plus the Lease's in the release namespace.
    assert len(find(docs, "Role")) == 3


def test_cluster_wide_grants_namespaced_rules_in_the_cluster_role(default_docs):
    triples = rule_set(one(default_docs, "ClusterRole")["rules"])
    assert ("serving.n1v1.io", "mlmodels", "watch") in triples
    assert ("serving.n1v1.io", "mlmodels/status", "patch") in triples
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "list") in triples
    assert [r["metadata"]["name"] for r in find(default_docs, "Role")] == [
        f"{FULLNAME}-leader-election"]
    crb = one(default_docs, "ClusterRoleBinding")
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


@pytest.mark.parametrize("values", [
    {},
    {"operator": {"watchNamespaces": ["a", "b"]}},
    {"replicaCount": 2},
    {"leaderElection": {"enabled": False}, "operator": {"watchNamespaces": ["a"]}},
])
def test_rbac_is_least_privilege(values):
    docs = render(values)
    roles = find(docs, "ClusterRole") + find(docs, "Role")
    assert roles
    for role in roles:
        for g, r, v in rule_set(role["rules"]):
            assert "*" not in (g, r, v), (role["kind"], g, r, v)
            assert r != "secrets", role["kind"]
            # Children are garbage-collected through ownerReferences, never deleted by us
            # unless operator/RBAC.md says so (checked in test_chart_rbac_doc).
            assert v not in ("escalate", "bind", "impersonate"), (r, v)
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule


def test_leader_election_by_default_rolls_and_grants_one_lease_in_the_release_namespace(
    default_docs,
):
    env = env_of(default_docs)
    assert env["OPERATOR_LEADER_ELECTION"] == "true"
    assert env["OPERATOR_LEADER_ELECTION_NAMESPACE"] == NAMESPACE
    assert env["OPERATOR_LEADER_ELECTION_LEASE"] == FULLNAME
    assert (env["OPERATOR_LEASE_DURATION_SECONDS"], env["OPERATOR_RENEW_DEADLINE_SECONDS"],
            env["OPERATOR_RETRY_PERIOD_SECONDS"]) == ("10", "7", "2")
    dep = one(default_docs, "Deployment")
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    role = one(default_docs, "Role", f"{FULLNAME}-leader-election", NAMESPACE)
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [FULLNAME], "verbs": ["get", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = one(default_docs, "RoleBinding", f"{FULLNAME}-leader-election", NAMESPACE)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    # Leases are never granted cluster-wide.
    assert not any(r == "leases" for _, r, _ in
                   rule_set(one(default_docs, "ClusterRole")["rules"]))
    # One replica: a PodDisruptionBudget would only block node drains.
    assert find(default_docs, "PodDisruptionBudget") == []


def test_two_replicas_get_a_pod_disruption_budget():
    docs = render({"replicaCount": 2, "leaderElection": {"leaseName": "ops-lock"}})
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    pdb = one(docs, "PodDisruptionBudget", FULLNAME, NAMESPACE)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == \
        one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert env_of(docs)["OPERATOR_LEADER_ELECTION_LEASE"] == "ops-lock"
    assert one(docs, "Role", f"{FULLNAME}-leader-election", NAMESPACE)["rules"][0][
        "resourceNames"] == ["ops-lock"]
    assert find(render({"replicaCount": 2, "podDisruptionBudget": {"enabled": False}}),
                "PodDisruptionBudget") == []


def test_without_leader_election_one_replica_recreated_and_no_lease_access():
    docs = render({"leaderElection": {"enabled": False}})
    assert "OPERATOR_LEADER_ELECTION" not in env_of(docs)
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert find(docs, "Role") == []
    result = template({"replicaCount": 2, "leaderElection": {"enabled": False}}, check=False)
    assert result.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled" in result.stderr


def test_existing_service_account():
    docs = render({"serviceAccount": {"create": False, "name": "ops"}})
    assert find(docs, "ServiceAccount") == []
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "ops"


def test_existing_service_account_needs_a_name():
    result = template({"serviceAccount": {"create": False}}, check=False)
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


def test_rbac_off():
    docs = render({"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert find(docs, kind) == [], kind


def test_replicas_zero_is_allowed():
    assert one(render({"replicaCount": 0}), "Deployment")["spec"]["replicas"] == 0


def test_service_monitor_off_by_default(default_docs):
    assert find(default_docs, "ServiceMonitor") == []
    assert find(default_docs, "ConfigMap") == []


def test_service_monitor():
    docs = render({"serviceMonitor": {
        "enabled": True, "namespace": "monitoring", "interval": "15s",
        "scrapeTimeout": "10s", "additionalLabels": {"release": "kps"}}})
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["metadata"]["labels"]["release"] == "kps"
    svc = one(docs, "Service")
    # It must select the metrics Service, in the release namespace, by a port that exists.
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert (ep["path"], ep["interval"], ep["scrapeTimeout"]) == ("/metrics", "15s", "10s")
    # mlmodel_operator_model_ready's namespace is the MLModel's, not the operator pod's
    assert ep["honorLabels"] is True


def operator_env(docs: list) -> dict[str, str]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_keda_values_reach_the_operator_settings():
    from mlmodel_operator.settings import OperatorSettings

    env = operator_env(render({"keda": {
        "enabled": True, "prometheusUrl": "http://prometheus-operated.monitoring.svc:9090",
        "latencyWindow": "30s", "pollingInterval": 5}}))
    # the names the operator reads (env prefix + field), and values it accepts
    settings = OperatorSettings(**{k.removeprefix("OPERATOR_").lower(): v
                                   for k, v in env.items() if k.startswith("OPERATOR_")})
    m = settings.monitoring()
    assert (m.prometheus_url, m.latency_window, m.polling_seconds) == (
        "http://prometheus-operated.monitoring.svc:9090", "30s", 5)


def test_network_policy_values_reach_the_operators_access(monkeypatch):
    from mlmodel_operator.settings import OperatorSettings

    env = operator_env(render({"networkPolicy": {"scrapeNamespaces": ["monitoring", "obs"]},
                               "nameOverride": "ops"}))
    settings = OperatorSettings(**{k.removeprefix("OPERATOR_").lower(): v
                                   for k, v in env.items() if k.startswith("OPERATOR_")})
    monkeypatch.setattr("mlmodel_operator.settings.SERVICEACCOUNT_NAMESPACE", "/nonexistent")
    access = settings.access()
    assert access.scrape_namespaces == ("monitoring", "obs")
    # exactly the labels the chart's operator pods carry: only they pass as the operator
    (dep,) = [d for d in render({"nameOverride": "ops"}) if d["kind"] == "Deployment"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert access.operator_pod_labels and all(
        pod_labels[k] == v for k, v in access.operator_pod_labels)
    assert "OPERATOR_SCRAPE_NAMESPACES" in operator_env(render(
        {"networkPolicy": {"scrapeNamespaces": []}}))


def test_without_keda_the_operator_gets_no_prometheus_address():
    # no address: the operator never touches ScaledObjects, which it has no RBAC for
    assert "OPERATOR_PROMETHEUS_URL" not in operator_env(render())


def test_crds_ship_with_the_chart():
    out = template(extra=["--include-crds"]).stdout
    crds = {d["metadata"]["name"] for d in yaml.safe_load_all(out)
            if d and d["kind"] == "CustomResourceDefinition"}
    assert crds == {"mlmodels.serving.n1v1.io"}
