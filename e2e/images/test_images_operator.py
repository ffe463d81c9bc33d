"""The n1v1-mlmodel-operator image, run for real against the cluster under test: it starts
with a mounted kubeconfig (read-only root, non-root) and reconciles a sample MLModel."""

from __future__ import annotations

import base64
import copy
import urllib.request
from pathlib import Path

import pytest
import yaml

from e2e.helpers import REPO_ROOT, kubectl, wait_for
from e2e.images.imagelib import (
    APP_UID,
    docker,
    free_port,
    inspect,
    logs,
    wait_exited,
    wait_http_ok,
)

pytestmark = pytest.mark.timeout(1800)

CRD_NAME = "mlmodels.serving.n1v1.io"
SAMPLE = REPO_ROOT / "examples" / "sklearn-https.yaml"
ML_MODULES = ("numpy", "scipy", "sklearn", "xgboost", "skops", "joblib")


def test_operator_image_config_and_no_ml_libraries(images) -> None:
    cfg = inspect(images.operator)["Config"]
    assert cfg["User"] == f"{APP_UID}:{APP_UID}"
    assert cfg["Entrypoint"] == ["python", "-m", "mlmodel_operator"]
    assert {"8080/tcp", "9090/tcp"} <= set(cfg["ExposedPorts"])
    assert cfg["Labels"]["org.opencontainers.image.title"] == "n1v1-mlmodel-operator"
    assert cfg["Labels"]["org.opencontainers.image.version"] == "0.1.0"
    probe = (
        "import importlib.util as u, sys;"
        f"found=[m for m in {ML_MODULES!r} if u.find_spec(m)];"
        "import kopf, kubernetes, mlmodel_operator;"
        "print(','.join(found))"
    )
    out = docker("run", "--rm", "--read-only", "--entrypoint", "python", images.operator,
                 "-c", probe)
    assert out.stdout.strip() == "", f"ML libraries in the operator image: {out.stdout}"


def _flat_kubeconfig(src: Path, dest: Path) -> Path:
    """Copy of `src` with certificate/key files inlined (the container sees only this
    file) and readable by the container's UID."""
    cfg = yaml.safe_load(src.read_text())
    cfg = copy.deepcopy(cfg)
    pairs = (
        ("clusters", "cluster", "certificate-authority"),
        ("users", "user", "client-certificate"),
        ("users", "user", "client-key"),
    )
    for section, inner, key in pairs:
        for entry in cfg.get(section) or []:
            body = entry.get(inner) or {}
            if key in body:
                path = Path(body.pop(key))
                if not path.is_absolute():
                    path = src.parent / path
                body[f"{key}-data"] = base64.b64encode(path.read_bytes()).decode()
        for entry in cfg.get("users") or []:
            user = entry.get("user") or {}
            if "tokenFile" in user:
                user["token"] = Path(user.pop("tokenFile")).read_text().strip()
    dest.write_text(yaml.safe_dump(cfg))
    dest.chmod(0o644)
    return dest


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _reconciles(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlmodel_operator_reconciles_total{")
    )


def test_operator_container_reconciles_sample_mlmodel(
    images, kubeconfig: Path, k8s, namespace: str, start_container, tmp_path: Path
) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"),
            kubeconfig=kubeconfig)
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s",
            kubeconfig=kubeconfig)
    flat = _flat_kubeconfig(kubeconfig, tmp_path / "kubeconfig")
    health, metrics = free_port(), free_port()
    # --network host: the kubeconfig's server is on this machine's loopback.
    cid = start_container(
        images.operator,
        "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,size=16m",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{flat}:/etc/n1v1/kubeconfig:ro",
        "-e", "KUBECONFIG=/etc/n1v1/kubeconfig",
        "-e", f"OPERATOR_NAMESPACES={namespace}",
        "-e", f"OPERATOR_HEALTH_PORT={health}",
        "-e", f"OPERATOR_METRICS_PORT={metrics}",
    )
    wait_http_ok(f"http://127.0.0.1:{health}/healthz", cid, timeout=120, interval=0.5)
    assert docker("exec", cid, "id", "-u").stdout.strip() == str(APP_UID)

    sample = yaml.safe_load(SAMPLE.read_text())
    name = sample["metadata"]["name"]
    sample["metadata"]["namespace"] = namespace
    kubectl("apply", "-f", "-", input=yaml.safe_dump(sample), kubeconfig=kubeconfig)

    def deployment():
        from kubernetes.client.rest import ApiException

        try:
            return k8s.apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    dep = wait_for(deployment, timeout=120, describe=f"Deployment {namespace}/{name}",
                   observe=lambda: logs(cid))
    owners = [(o.kind, o.name) for o in dep.metadata.owner_references or []]
    assert ("MLModel", name) in owners, owners
    images_used = [c.image for c in dep.spec.template.spec.containers]
    assert "n1v1-ml-serving:0.1.0" in images_used, images_used
    # This container did the work (not some other operator watching the cluster). The
    # counter moves when the reconcile returns, a moment after the Deployment is written.
    wait_for(lambda: _reconciles(_metrics(metrics)) >= 1, timeout=60,
             describe="mlmodel_operator_reconciles_total >= 1", observe=lambda: logs(cid))

    # SIGTERM ends it cleanly well within Kubernetes' default 30 s grace period.
    docker("kill", "--signal", "TERM", cid)
    state = wait_exited(cid, timeout=30)
    assert state["ExitCode"] == 0, (state, logs(cid))
