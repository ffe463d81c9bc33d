"""The NetworkPolicy of an MLModel: who may call its runtime, where its pods may connect.

Closed by default: ingress to the runtime's ports only from spec.serving.networkPolicy.
allowedFrom (default: pods of the MLModel's own namespace), plus the operator (it reads
each pod's /health during a rollout) and the monitoring namespaces (scrapes of /metrics).
Egress only for what the fetch step needs: nothing for pvc:// and configmap:// sources,
DNS and the model store's ports for http(s):// and s3:// ones (a NetworkPolicy cannot
name a host, so those ports are open to any address). The policy selects the pod, so the
runtime container has the same egress as its fetch step.

A pure builder: no kopf, no Kubernetes client (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import names
from .builders import Owner, child_metadata, selector_labels
from .spec import MLModelSpec

DNS_PORT = 53
_DEFAULT_PORTS = {"http": 80, "https": 443, "s3": 443}


@dataclass(frozen=True)
class Access:
    """Operator-wide facts the policy needs (the operator's settings; the chart sets them)."""

    #: namespaces whose pods scrape /metrics (the Prometheus of the monitoring stack)
    scrape_namespaces: tuple[str, ...] = ()
    #: the operator's own namespace ("" outside a pod: it then calls from the node) and its
    #: pod labels (empty: any pod of that namespace); it reads each runtime pod's /health
    operator_namespace: str = ""
    operator_pod_labels: tuple[tuple[str, str], ...] = ()


def fetch_ports(spec: MLModelSpec) -> list[int]:
    """TCP ports the fetch steps connect to, sorted: each network URI's port (or its
    scheme's default) and spec.serving.networkPolicy.fetchPorts."""
    ports = set(spec.serving.networkPolicy.fetchPorts)
    for src in (spec.model, spec.challenger):
        if src is None or src.scheme not in _DEFAULT_PORTS:
            continue
        try:
            port = urlsplit(src.uri).port
        except ValueError:  # the CRD and spec.py have checked the URI; a bad port: default
            port = None
        ports.add(port or _DEFAULT_PORTS[src.scheme])
    return sorted(ports)


def _namespace_peer(namespace: str, pod_labels: dict[str, str] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {names.NAMESPACE_NAME_LABEL: namespace}}}
    if pod_labels:
        peer["podSelector"] = {"matchLabels": pod_labels}
    return peer


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def ingress_rules(spec: MLModelSpec, access: Access) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    callers = [p.manifest() for p in spec.serving.networkPolicy.callers]
    if callers:
        rules.append({"from": callers, "ports": _tcp(names.RUNTIME_PORT, names.GRPC_PORT)})
    if access.operator_namespace:
        rules.append({
            "from": [_namespace_peer(access.operator_namespace, dict(access.operator_pod_labels))],
            "ports": _tcp(names.RUNTIME_PORT),
        })
    if access.scrape_namespaces:
        rules.append({
            "from": [_namespace_peer(ns) for ns in access.scrape_namespaces],
            "ports": _tcp(names.RUNTIME_PORT),
        })
    return rules


def egress_rules(spec: MLModelSpec) -> list[dict[str, Any]]:
    ports = fetch_ports(spec)
    if not ports:
        return []  # volume sources only: the pod connects nowhere
    return [
        # DNS for the store's host name, wherever the cluster's resolver runs
        {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]},
        {"ports": _tcp(*ports)},
    ]


def build_network_policy(owner: Owner, spec: MLModelSpec, access: Access) -> dict[str, Any] | None:
    """The MLModel's NetworkPolicy, or None when spec.serving.networkPolicy.enabled is false."""
    if not spec.serving.networkPolicy.enabled:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress_rules(spec, access),
            "egress": egress_rules(spec),
        },
    }
