"""The NetworkPolicy builder and the auth wiring: who may call a model, where its pods may
connect, and how the token and TLS Secrets reach the runtime (docs/security.md)."""

from __future__ import annotations

import copy

import pytest
from mlmodel_operator import builders, names
from mlmodel_operator.network_policy import Access, build_network_policy, fetch_ports
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.spec import SpecError, parse_spec

OWNER = builders.Owner(name="fraud", namespace="team-a", uid="1234-uid", generation=3)
IMAGE = "n1v1-ml-serving:0.1.0"
HTTPS = {"framework": "xgboost", "version": "1.2.0", "uri": "https://h.example/m.tar.gz"}
PVC = {"framework": "xgboost", "version": "1.2.0", "uri": "pvc://models/fraud"}
ACCESS = Access(scrape_namespaces=("monitoring",), operator_namespace="n1v1-system",
                operator_pod_labels=(("app.kubernetes.io/name", "mlmodel-operator"),))


def spec(model=HTTPS, **serving):
    return parse_spec({"model": copy.deepcopy(model), "serving": copy.deepcopy(serving)})


def policy(access=ACCESS, **kw):
    return build_network_policy(OWNER, spec(**kw), access)


def rule_from(pol, port):
    """The peers of every ingress rule that opens `port`."""
    return [peer for rule in pol["spec"]["ingress"]
            if {"protocol": "TCP", "port": port} in rule["ports"] for peer in rule["from"]]


def test_default_policy_selects_the_models_pods_and_admits_only_its_own_namespace():
    pol = policy()
    assert pol["kind"] == "NetworkPolicy" and pol["apiVersion"] == "networking.k8s.io/v1"
    assert pol["metadata"]["name"] == "fraud" and pol["metadata"]["namespace"] == "team-a"
    assert pol["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert pol["spec"]["podSelector"] == {"matchLabels": builders.selector_labels("fraud")}
    assert pol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    callers = pol["spec"]["ingress"][0]
    # A bare podSelector {} is "every pod of the policy's own namespace"
    assert callers["from"] == [{"podSelector": {}}]
    assert callers["ports"] == [{"protocol": "TCP", "port": names.RUNTIME_PORT},
                                {"protocol": "TCP", "port": names.GRPC_PORT}]


def test_scrapers_and_the_operator_reach_only_the_http_port():
    pol = policy()
    ns = names.NAMESPACE_NAME_LABEL
    http, grpc = rule_from(pol, names.RUNTIME_PORT), rule_from(pol, names.GRPC_PORT)
    assert {"namespaceSelector": {"matchLabels": {ns: "monitoring"}}} in http
    assert {"namespaceSelector": {"matchLabels": {ns: "n1v1-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlmodel-operator"}}} in http
    assert grpc == [{"podSelector": {}}]


def test_outside_a_pod_the_operator_gets_no_rule_and_no_scrapers_means_none():
    pol = policy(access=Access())
    assert pol["spec"]["ingress"] == [{
        "from": [{"podSelector": {}}],
        "ports": [{"protocol": "TCP", "port": names.RUNTIME_PORT},
                  {"protocol": "TCP", "port": names.GRPC_PORT}]}]


def test_allowed_from_names_namespaces_pods_and_address_blocks():
    pol = policy(networkPolicy={"allowedFrom": [
        {"namespaceSelector": {"matchLabels": {"team": "trading"}},
         "podSelector": {"matchExpressions": [
             {"key": "app", "operator": "In", "values": ["engine", "backtest"]}]}},
        {"podSelector": {"matchLabels": {"role": "engine"}}},
        {"ipBlock": {"cidr": "192.168.10.0/24", "except": ["192.168.10.7/32"]}},
    ]})
    assert pol["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "trading"}},
         "podSelector": {"matchExpressions": [
             {"key": "app", "operator": "In", "values": ["engine", "backtest"]}]}},
        {"podSelector": {"matchLabels": {"role": "engine"}}},
        {"ipBlock": {"cidr": "192.168.10.0/24", "except": ["192.168.10.7/32"]}},
    ]


def test_allowed_from_empty_admits_no_caller_but_keeps_scrapes_and_the_operator():
    pol = policy(networkPolicy={"allowedFrom": []})
    assert rule_from(pol, names.GRPC_PORT) == []
    assert len(rule_from(pol, names.RUNTIME_PORT)) == 2  # monitoring + the operator


def test_disabled_builds_no_policy():
    assert policy(networkPolicy={"enabled": False}) is None


@pytest.mark.parametrize(("uri", "extra", "ports"), [
    ("https://h.example/m.tar.gz", [], [443]),
    ("http://h.example/m.tar.gz", [], [80]),
    ("https://h.example:8443/m.tar.gz", [], [8443]),
    ("s3://bucket/m", [9000], [443, 9000]),
    ("pvc://models/fraud", [], []),
    ("configmap://fraud-model", [], []),
])
def test_fetch_ports_follow_the_model_source(uri, extra, ports):
    s = spec(model={**HTTPS, "uri": uri}, networkPolicy={"fetchPorts": extra})
    assert fetch_ports(s) == ports


def test_egress_is_dns_and_the_stores_port_for_a_network_source_and_nothing_for_a_volume():
    assert policy()["spec"]["egress"] == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"ports": [{"protocol": "TCP", "port": 443}]},
    ]
    # Egress listed in policyTypes with no rule: the pod may connect nowhere
    pol = policy(model=PVC)
    assert pol["spec"]["egress"] == [] and "Egress" in pol["spec"]["policyTypes"]


def test_a_challenger_from_another_store_opens_its_port_too():
    s = parse_spec({"model": HTTPS, "canary": {
        "version": "1.3.0", "uri": "http://other.example:8080/c.tar.gz", "weight": 10}})
    assert fetch_ports(s) == [443, 8080]


@pytest.mark.parametrize(("peer", "message"), [
    ({}, "needs namespaceSelector, podSelector or ipBlock"),
    ({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}, "either an ipBlock or selectors"),
    ({"ipBlock": {"cidr": "10.0.0.300/8"}}, "is not a CIDR"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "needs at least one value"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                            "values": ["x"]}]}}, "takes no values"),
])
def test_bad_peers_are_rejected_naming_the_problem(peer, message):
    with pytest.raises(SpecError, match=message):
        spec(networkPolicy={"allowedFrom": [peer]})


def test_a_fetch_port_out_of_range_is_rejected():
    with pytest.raises(SpecError, match="port 70000 is not in 1..65535"):
        spec(networkPolicy={"fetchPorts": [70000]})


def test_operator_settings_read_scrape_namespaces_and_pod_labels(monkeypatch, tmp_path):
    monkeypatch.setenv("OPERATOR_SCRAPE_NAMESPACES", "monitoring, obs")
    monkeypatch.setenv("OPERATOR_POD_LABELS",
                       "app.kubernetes.io/name=mlmodel-operator,app.kubernetes.io/instance=ops")
    access = OperatorSettings().access()
    assert access.scrape_namespaces == ("monitoring", "obs")
    assert access.operator_pod_labels == (("app.kubernetes.io/name", "mlmodel-operator"),
                                          ("app.kubernetes.io/instance", "ops"))
    monkeypatch.setenv("OPERATOR_POD_LABELS", "no-equals-sign")
    with pytest.raises(ValueError, match="pod_labels"):
        OperatorSettings()


# ---- spec.serving.auth -----------------------------------------------------------------------

def runtime(dep):
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def test_no_auth_means_plain_http_everywhere():
    s = spec()
    dep = builders.build_deployment(OWNER, s, IMAGE)
    env = {e["name"] for e in runtime(dep).get("env", [])}
    assert not env & {names.ENV_AUTH_TOKENS_DIR, names.ENV_TLS_CERT_FILE, names.ENV_TLS_KEY_FILE}
    assert runtime(dep)["readinessProbe"]["httpGet"].get("scheme", "HTTP") == "HTTP"
    assert builders.service_url("fraud", "team-a", builders.runtime_scheme(s)).startswith("http://")


def test_token_secret_is_mounted_read_only_and_named_to_the_runtime():
    s = spec(auth={"tokenSecret": "fraud-tokens"})
    dep = builders.build_deployment(OWNER, s, IMAGE)
    c = runtime(dep)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env[names.ENV_AUTH_TOKENS_DIR] == builders.AUTH_TOKENS_DIR
    # kubelet probes carry no token: health stays open (docs/security.md)
    assert env[names.ENV_AUTH_HEALTH] == names.AUTH_HEALTH_OPEN
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == builders.AUTH_TOKENS_DIR]
    assert mount["readOnly"] is True
    (vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert vol["secret"]["secretName"] == "fraud-tokens"
    assert vol["secret"].get("optional", False) is False  # no Secret: the pod waits, never open
    assert names.ENV_TLS_CERT_FILE not in env


def test_tls_secret_switches_probes_service_scrapes_and_url_to_https():
    s = spec(auth={"tlsSecret": "fraud-tls"})
    dep = builders.build_deployment(OWNER, s, IMAGE)
    c = runtime(dep)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env[names.ENV_TLS_CERT_FILE].startswith(builders.TLS_DIR + "/")
    assert env[names.ENV_TLS_KEY_FILE].startswith(builders.TLS_DIR + "/")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert any(v.get("secret", {}).get("secretName") == "fraud-tls" for v in vols.values())
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations.get(names.SCRAPE_SCHEME_ANNOTATION) == "https"
    ports = {p["name"]: p for p in builders.build_service(OWNER, s)["spec"]["ports"]}
    grpc = [p.get("appProtocol") for p in ports.values() if p["port"] == names.GRPC_PORT]
    assert grpc == ["grpc"]
    endpoint = builders.build_pod_monitor(OWNER, s)["spec"]["podMetricsEndpoints"][0]
    assert endpoint["scheme"] == "https"
    assert builders.service_url("fraud", "team-a", builders.runtime_scheme(s)).startswith("https://")


@pytest.mark.parametrize("field", ["tokenSecret", "tlsSecret"])
def test_auth_secret_names_must_be_dns_names(field):
    with pytest.raises(SpecError, match=field):
        spec(auth={field: "Not_A_Name"})


@pytest.mark.parametrize("var", ["AUTH_TOKENS_DIR", "AUTH_HEALTH", "TLS_CERT_FILE", "TLS_KEY_FILE"])
def test_the_user_may_not_set_the_auth_env_the_operator_owns(var):
    with pytest.raises(SpecError, match=f"may not set {var}"):
        spec(env=[{"name": var, "value": "x"}])


@pytest.mark.parametrize(("block", "message"), [
    ({"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}, "is not inside cidr"),
    ({"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}, "is not inside cidr"),
    ({"cidr": "10.0.0.0/8", "except": ["10.0.0.0/33"]}, "is not a CIDR"),
])
def test_ip_block_exceptions_must_lie_inside_the_block(block, message):
    # the API server refuses such a NetworkPolicy: refused in the spec, before any pod runs
    with pytest.raises(SpecError, match=message):
        spec(networkPolicy={"allowedFrom": [{"ipBlock": block}]})


def test_ipv6_blocks_are_accepted():
    pol = policy(networkPolicy={"allowedFrom": [{"ipBlock": {"cidr": "::/0"}},
                                                {"ipBlock": {"cidr": "fd00::/8",
                                                             "except": ["fd00::/64"]}}]})
    assert pol["spec"]["ingress"][0]["from"][0] == {"ipBlock": {"cidr": "::/0"}}


def test_a_bad_scrape_namespace_setting_is_refused(monkeypatch):
    monkeypatch.setenv("OPERATOR_SCRAPE_NAMESPACES", "Monitoring;rm")
    with pytest.raises(ValueError, match="scrape_namespaces"):
        OperatorSettings()
