"""Who may call a model, on the real node (kube-router enforces NetworkPolicies there):
the operator's NetworkPolicy admits the MLModel's own namespace by default and refuses any
other; changing spec.serving.networkPolicy opens it, and `enabled: false` removes it.
Callers are pods of the runtime image (e2e/pod_clients.py); the test host itself (probes,
the operator's /health reads) is the node, which NetworkPolicies do not filter.
"""

from __future__ import annotations

import base64
import json
import ssl
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


def test_token_and_tls_through_the_operator_with_a_rotation_and_no_restart(
    realpods, on_real_node, tmp_path, namespace
):
    """spec.serving.auth on real pods: the pod waits for its TLS Secret rather than serving
    in the clear; then HTTPS verified against the caller's CA, 401 without the token,
    the engine's client (REST and gRPC) with it, and a token rotation through the Secret
    that the runtime picks up without a restart."""
    import httpx

    from e2e.realpods.models import configmap_folder, rows
    from serving_runtime.client import AuthenticationError, InferenceClient
    from tests.support.auth_support import bearer, issue, make_ca

    old, new = "old-" + "a1" * 16, "new-" + "b2" * 16
    realpods.kubectl("create", "secret", "generic", f"{MODEL}-tokens",
                     f"--from-literal=engine={old}")
    configmap, mlmodel = example("xgboost-configmap.yaml")
    mlmodel["spec"].setdefault("serving", {})["auth"] = {
        "tokenSecret": f"{MODEL}-tokens", "tlsSecret": f"{MODEL}-tls"}
    realpods.apply(configmap)
    realpods.apply(on_real_node(mlmodel))

    # No TLS Secret yet: the Service exists, no pod becomes ready (never plain HTTP).
    svc = wait_for(lambda: realpods.get("service", MODEL), timeout=60,
                   describe=f"Service {MODEL}")
    cluster_ip = svc["spec"]["clusterIP"]
    time.sleep(5)
    pods_now = realpods.list("pods", f"app.kubernetes.io/instance={MODEL}")
    assert pods_now and not any(
        c.get("ready") for p in pods_now for c in p["status"].get("containerStatuses") or []), \
        "a pod became ready before its TLS Secret existed"

    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    issue(ca, cert, key, cn=f"{MODEL}.{namespace}.svc", ips=[cluster_ip],
          dns=[f"{MODEL}.{namespace}.svc", f"{MODEL}.{namespace}.svc.cluster.local"])
    realpods.kubectl("create", "secret", "tls", f"{MODEL}-tls", f"--cert={cert}",
                     f"--key={key}")
    ready = realpods.wait_ready(MODEL, timeout=120)
    assert ready["status"]["url"].startswith("https://"), ready["status"]["url"]
    (pod,) = realpods.list("pods", f"app.kubernetes.io/instance={MODEL}")

    url = f"https://{cluster_ip}:8000"
    folder = configmap_folder(configmap, tmp_path / "models", MODEL)
    names = json.loads((folder / "metadata.json").read_text())["feature_names"]
    data = rows(names, 20)
    want = InferenceClient(remote=False, models_dir=tmp_path / "models").predict(MODEL, data)

    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca.path)), timeout=10) as http:
        wait_for(lambda: http.get(f"{url}/v2/health/ready").status_code == 200, timeout=30,
                 describe="the Service answering over HTTPS")  # health stays open
        body = {"model_name": MODEL, "features": {k: v[:1] for k, v in data.items()}}
        r = http.post(f"{url}/predict", json=body)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == 'Bearer realm="n1v1"'
        r = http.post(f"{url}/predict", json=body, headers=bearer("not-the-token"))
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    with httpx.Client(timeout=10) as plain:  # the CA is the caller's: no CA, no connection
        try:
            plain.get(f"{url}/v2/health/ready")
            raise AssertionError("an unverified certificate was accepted")
        except httpx.ConnectError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc), exc

    for remote in (url, f"grpcs://{cluster_ip}:8081"):
        with InferenceClient(remote=True, url=remote, token=old, ca_file=ca.path,
                             timeout=10) as engine:
            got = engine.predict(MODEL, data)
        assert got["prediction"] == want["prediction"], remote

    # Rotation: the Secret now holds only the new token; the kubelet refreshes the volume
    # in place and the runtime re-reads it.
    t0 = time.monotonic()
    new_data = {"engine2": base64.b64encode(new.encode()).decode()}
    realpods.kubectl("patch", "secret", f"{MODEL}-tokens", "--type=json", "-p",
                     json.dumps([{"op": "replace", "path": "/data", "value": new_data}]))

    def rotated() -> bool:
        with InferenceClient(remote=True, url=url, token=new, ca_file=ca.path,
                             timeout=5) as engine:
            try:
                engine.predict(MODEL, data)
            except AuthenticationError:
                return False
        return True

    wait_for(rotated, timeout=150, interval=2, describe="the new token accepted")
    print(f"\ntoken rotation through the Secret took effect {time.monotonic() - t0:.1f}s "
          "after the patch (kubelet volume refresh + runtime re-read)")
    with InferenceClient(remote=True, url=url, token=old, ca_file=ca.path, timeout=5) as engine:
        try:
            engine.predict(MODEL, data)
            raise AssertionError("the removed token is still accepted")
        except AuthenticationError as exc:
            assert old not in str(exc)
    (after,) = realpods.list("pods", f"app.kubernetes.io/instance={MODEL}")
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca.path)), timeout=10) as http:
        metrics = http.get(f"{url}/metrics").text  # open by default: Prometheus scrapes it
    counted = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
               if line.startswith("auth_failures_total{")}
    # both series exist from the start at 0: the refusals above must have counted
    assert counted['auth_failures_total{reason="missing"}'] >= 1, counted
    assert counted['auth_failures_total{reason="invalid"}'] >= 2, counted
