"""NetworkPolicy is enforced on the real node (kube-router's firewall controller beside the
bridge CNI, e2e/cluster/node.sh): pods of the runtime image really connect to each other, and
a policy cuts them off within seconds of being applied, and lets them back in when changed.

Two paths to the server are checked: through the Service (routed by the host, kube-proxy's
DNAT) and to the pod IP (switched by the bridge: only bridge-nf-call-iptables=1 puts it
through iptables). kubelet probes come from the host and must keep passing under deny-all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.helpers import kubectl, wait_for
from e2e.pod_clients import PORT, Pods, client, pod


def server(name: str = "server") -> dict[str, Any]:
    return pod(name, {"app": "server"},
               ["python", "-m", "http.server", str(PORT), "--directory", "/app"], probes=True)


def service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server"},
            "spec": {"selector": {"app": "server"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def from_namespaces(*names: str) -> dict[str, Any]:
    """Ingress to the server only from pods of these namespaces."""
    return {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In",
                "values": list(names)}]}}]}]}


def test_policy_admits_one_namespace_then_two_and_egress_deny_all_cuts_a_client(
    pods: Pods, make_namespace: Callable[..., str], kubeconfig: Path
) -> None:
    ns_a, ns_b = make_namespace("netpol-a"), make_namespace("netpol-b")
    pods.create(ns_a, server(), service(), client("client-a"))
    pods.create(ns_b, client("client-b"))
    server_ip = pods.wait_ready(ns_a, "server")
    pods.wait_ready(ns_a, "client-a")
    pods.wait_ready(ns_b, "client-b")
    cluster_ip = pods.k8s.core.read_namespaced_service("server", ns_a).spec.cluster_ip
    via_service, via_pod = f"http://{cluster_ip}/", f"http://{server_ip}:{PORT}/"

    # No policy: both namespaces reach the server, through the Service and directly. (An
    # EndpointSlice can be ready before kube-proxy programmed it: wait until it answers.)
    wait_for(lambda: pods.request(ns_b, "client-b", via_service) == "ok", timeout=30,
             describe="the Service answering client-b")
    pods.assert_answers(ns_a, "client-a", via_service, via_pod)
    pods.assert_answers(ns_b, "client-b", via_service, via_pod)

    # Ingress only from namespace A: B is refused, A still answered.
    only_a = policy("server-ingress", from_namespaces(ns_a))
    took = pods.change_and_time(ns_b, "client-b", via_service, "refused",
                                lambda: pods.create(ns_a, only_a))
    print(f"\nNetworkPolicy enforced (namespace B refused) {took:.2f}s after kubectl apply began")
    pods.assert_refused(ns_b, "client-b", via_service, via_pod)
    pods.assert_answers(ns_a, "client-a", via_service, via_pod)

    # The same policy now admits B too.
    a_and_b = policy("server-ingress", from_namespaces(ns_a, ns_b))
    took = pods.change_and_time(ns_b, "client-b", via_service, "ok",
                                lambda: pods.create(ns_a, a_and_b))
    print(f"NetworkPolicy change enforced (namespace B admitted) {took:.2f}s after kubectl "
          "apply began")
    pods.assert_answers(ns_b, "client-b", via_service, via_pod)
    pods.assert_answers(ns_a, "client-a", via_service, via_pod)

    # Egress deny-all on client-a: its outgoing connections stop; B's are untouched.
    deny_egress = policy("client-deny-egress", {
        "podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"]})
    took = pods.change_and_time(ns_a, "client-a", via_service, "refused",
                                lambda: pods.create(ns_a, deny_egress))
    print(f"egress deny-all enforced (client-a cut off) {took:.2f}s after kubectl apply began")
    pods.assert_refused(ns_a, "client-a", via_service, via_pod)
    pods.assert_answers(ns_b, "client-b", via_service, via_pod)

    # Deleting the policy lets client-a out again.
    took = pods.change_and_time(ns_a, "client-a", via_service, "ok", lambda: kubectl(
        "delete", "networkpolicy", "client-deny-egress", "-n", ns_a, kubeconfig=kubeconfig))
    print(f"egress deny-all deleted: client-a answered again {took:.2f}s later")


def test_kubelet_probes_pass_under_deny_all(
    pods: Pods, make_namespace: Callable[..., str]
) -> None:
    """Probes come from the host (source address of the node: kube-router accepts it), so a
    deny-all policy leaves a pod Ready while it really cuts off other pods."""
    ns = make_namespace("netpol-probes")
    pods.create(ns, server(), client("client"))
    server_ip = pods.wait_ready(ns, "server")
    pods.wait_ready(ns, "client")
    url = f"http://{server_ip}:{PORT}/"
    pods.assert_answers(ns, "client", url)

    # Only the server is selected: what cuts the client off is the server's ingress.
    deny_all = policy("deny-all", {"podSelector": {"matchLabels": {"app": "server"}},
                                   "policyTypes": ["Ingress", "Egress"]})
    took = pods.change_and_time(ns, "client", url, "refused",
                                lambda: pods.create(ns, deny_all))
    print(f"\ndeny-all enforced {took:.2f}s after kubectl apply began")

    # Readiness and liveness probe every second with failureThreshold 1: one refused probe
    # would make the pod unready, a refused liveness probe would restart it.
    def state() -> tuple[bool, int]:
        p = pods.k8s.core.read_namespaced_pod("server", ns)
        ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        return ready, p.status.container_statuses[0].restart_count

    end = time.monotonic() + 8
    while time.monotonic() < end:
        assert state() == (True, 0), f"server under deny-all: (ready, restarts) = {state()}"
        time.sleep(0.5)
    pods.assert_refused(ns, "client", url)
