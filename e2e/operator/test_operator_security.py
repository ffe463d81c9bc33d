"""Generated pods are admitted where the restricted Pod Security profile is enforced."""

from __future__ import annotations

import yaml

from e2e.helpers import kubectl, wait_for


def test_pods_admitted_under_restricted_pod_security(
    run_operator, make_namespace, kubeconfig, operator_kubeconfig, base_mlmodel
):
    ns = make_namespace(
        "psa-restricted",
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )
    # The namespace really enforces: a root pod is refused.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    r = kubectl(
        "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(bad), kubeconfig=kubeconfig, check=False
    )
    assert r.returncode != 0 and "violates PodSecurity" in r.stderr, r.stderr

    run_operator(ns)
    models = [
        base_mlmodel("https-model", model={"sha256": "cd" * 32}),
        base_mlmodel("pvc-model", model={"uri": "pvc://model-store/models/pvc-model"}),
        base_mlmodel(
            "cm-model", model={"uri": "configmap://cm-model-files"}, serving={"replicas": 2}
        ),
        base_mlmodel(
            "s3-model", model={"uri": "s3://bucket/key.tar.gz", "credentialsSecret": "creds"}
        ),
    ]
    kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(models), kubeconfig=kubeconfig)

    def pods_admitted():
        # Admission happens at creation: a pod that exists passed PodSecurity. (The pvc one
        # stays Pending: no such claim here, and scheduling is not what this test is about.)
        out = kubectl("get", "pods", "-n", ns, "-o", "json", kubeconfig=kubeconfig).stdout
        pods = yaml.safe_load(out)["items"]
        names = {p["metadata"]["labels"]["serving.n1v1.io/model"] for p in pods}
        return names == {"https-model", "pvc-model", "cm-model", "s3-model"} and len(pods) == 5

    wait_for(
        pods_admitted,
        timeout=120,
        describe="every model's pods admitted",
        observe=lambda: kubectl("get", "rs,pods,events", "-n", ns, kubeconfig=kubeconfig).stdout,
    )
    events = kubectl(
        "get", "events", "-n", ns, "--field-selector", "reason=FailedCreate", kubeconfig=kubeconfig
    ).stdout
    assert "PodSecurity" not in events, events
