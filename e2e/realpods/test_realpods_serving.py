"""The product's main promise on a real kubelet: `kubectl apply` an MLModel, and the engine's
client gets, through the model's Service, the same predictions as in-process inference.

Sources are real and served by the test host (an HTTP server on the pods' gateway address, a
ConfigMap); the runtime image runs in pods the operator created (fetch init container,
volumes, probes, security context, Service routing all real).
"""

from __future__ import annotations

import json
import time

from e2e.helpers import free_port, kubectl
from e2e.mlmodels import base_mlmodel
from e2e.realpods.cluster import (
    assert_remote_equals_local,
    cluster_grpc_url,
    cluster_url,
    ready_endpoints,
)
from e2e.realpods.models import (
    configmap_folder,
    escaping_archive,
    example,
    lightgbm_folder,
    sha256,
    sklearn_folder,
    tar_folder,
)


def test_configmap_example_serves_like_local(realpods, on_real_node, tmp_path):
    """examples/xgboost-configmap.yaml: the ConfigMap folder, fetched by the init container;
    the same answers through the Service over REST and over gRPC (the engine's client with
    a grpc:// URL, and Triton's own client against the V2 REST answer)."""
    configmap, mlmodel = example("xgboost-configmap.yaml")
    realpods.apply(configmap)
    t0 = time.monotonic()
    realpods.apply(on_real_node(mlmodel))
    realpods.wait_ready("tiny-xgb", timeout=120)
    print(f"tiny-xgb Ready {time.monotonic() - t0:.1f}s after apply")
    assert len(ready_endpoints(realpods, "tiny-xgb")) == 1
    models_dir = tmp_path / "models"
    folder = configmap_folder(configmap, models_dir, "tiny-xgb")
    names = json.loads((folder / "metadata.json").read_text())["feature_names"]
    url = cluster_url(realpods, "tiny-xgb")
    assert_remote_equals_local(url, models_dir, "tiny-xgb", names)
    grpc_url = cluster_grpc_url(realpods, "tiny-xgb")
    assert_remote_equals_local(grpc_url, models_dir, "tiny-xgb", names)
    assert_triton_equals_rest(url, grpc_url, "tiny-xgb", len(names))
    assert_explanations_equal_local(url, grpc_url, models_dir, "tiny-xgb", names)


def assert_explanations_equal_local(url: str, grpc_url: str, models_dir, model: str,
                                    names: list[str]) -> None:
    """POST /explain through the Service, over REST and gRPC, equals in-process TreeSHAP."""
    import numpy as np

    from e2e.realpods.models import rows
    from serving_runtime.client import InferenceClient

    data = rows(names, 50, seed=4)
    want = InferenceClient(remote=False, models_dir=models_dir).explain(model, data, "why-1")
    for remote in (url, grpc_url):
        with InferenceClient(remote=True, url=remote, timeout=10) as client:
            got = client.explain(model, data, "why-1")
        assert got["output"] == want["output"] == "margin"
        for key, e in want["explanations"].items():
            g = got["explanations"][key]
            np.testing.assert_allclose(g["base_value"], e["base_value"], rtol=1e-12)
            for n in names:
                np.testing.assert_allclose(g["contributions"][n], e["contributions"][n],
                                           rtol=1e-12, atol=1e-15)


def assert_triton_equals_rest(url: str, grpc_url: str, model: str, n_features: int) -> None:
    import httpx
    import numpy as np
    import tritonclient.grpc as tg

    X = np.random.default_rng(3).normal(size=(64, n_features))
    client = tg.InferenceServerClient(grpc_url.removeprefix("grpc://"))
    try:
        assert client.is_server_ready() and client.is_model_ready(model)
        inp = tg.InferInput("input-0", list(X.shape), "FP64")
        inp.set_data_from_numpy(X)
        outs = ["predict", "predict_proba"]
        got = client.infer(model, [inp], outputs=[tg.InferRequestedOutput(o) for o in outs])
    finally:
        client.close()
    rest = httpx.post(f"{url}/v2/models/{model}/infer", timeout=10, json={
        "inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": "FP64",
                    "data": X.ravel().tolist()}],
        "outputs": [{"name": o} for o in outs]}).json()
    for o in rest["outputs"]:
        assert got.as_numpy(o["name"]).ravel().tolist() == o["data"], o["name"]


def test_https_example_over_the_test_host(realpods, on_real_node, https_model_site, tmp_path):
    """examples/sklearn-https.yaml with its archive served over HTTPS by the test host under
    a private CA (trusted through the example's caBundle ConfigMap), pinned by the model
    artifact's real sha256 (what fetch pins: the artifact, not the archive), two replicas
    behind the Service."""
    site, ca = https_model_site
    (mlmodel,) = example("sklearn-https.yaml")
    models_dir = tmp_path / "models"
    folder, names = sklearn_folder(models_dir, "fraud-rf", mlmodel["spec"]["model"]["version"])
    tar_folder(folder, site.root / "fraud-rf.tar.gz")
    meta = json.loads((folder / "metadata.json").read_text())
    assert sha256(folder / meta["artifact"]) == meta["sha256"]
    mlmodel["spec"]["model"]["uri"] = f"{site.url}/fraud-rf.tar.gz"
    mlmodel["spec"]["model"]["sha256"] = meta["sha256"]
    realpods.apply({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": mlmodel["spec"]["model"]["caBundle"]["configMap"]},
                    "data": {"ca.crt": ca.read_text()}})
    t0 = time.monotonic()
    realpods.apply(on_real_node(mlmodel, cpu="100m"))
    realpods.wait_ready("fraud-rf", timeout=180)
    print(f"fraud-rf (2 replicas, https with a private CA) Ready {time.monotonic() - t0:.1f}s "
          "after apply")
    assert len(ready_endpoints(realpods, "fraud-rf")) == 2
    assert_remote_equals_local(cluster_url(realpods, "fraud-rf"), models_dir, "fraud-rf", names)


def test_lightgbm_under_the_name_the_engine_uses(realpods, on_real_node, model_site, tmp_path):
    """A LightGBM model served as `your_model` (the original design document's name, not a
    DNS label): the MLModel is `your-model`, spec.model.name carries the served name. The
    folder is a .tar.gz over HTTP pinned by the artifact's sha256; the engine's client asks
    for `your_model` through the Service and gets what in-process inference gives."""
    models_dir = tmp_path / "models"
    folder, names = lightgbm_folder(models_dir, "your_model", "1.0.0")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["framework"] == "lightgbm" and meta["artifact"] == "model.txt"
    tar_folder(folder, model_site.root / "your_model.tar.gz")
    body = base_mlmodel("your-model", model={
        "framework": "lightgbm", "name": "your_model", "version": "1.0.0",
        "uri": f"{model_site.url}/your_model.tar.gz", "sha256": meta["sha256"]})
    t0 = time.monotonic()
    realpods.apply(on_real_node(body))
    status = realpods.wait_ready("your-model", timeout=180)["status"]
    print(f"your-model (LightGBM, served as your_model) Ready {time.monotonic() - t0:.1f}s "
          "after apply")
    assert status["servedModel"] == "your_model", status
    url = cluster_url(realpods, "your-model")
    assert_remote_equals_local(url, models_dir, "your_model", names)
    import httpx

    health = httpx.get(f"{url}/health", timeout=10).json()
    assert health["models_loaded"] == ["your_model"], health
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'model_fast_path{model_name="your_model"} 1.0' in metrics  # compiled trees serve


def test_fetch_failures_say_why_and_never_serve(realpods, on_real_node, model_site,
                                                https_model_site, tmp_path):
    """A wrong sha256, an unreachable URI, an unsafe archive, a private CA not given and a
    caBundle ConfigMap that does not exist each fail the init container; the status names
    which, and the Service never gets a ready endpoint."""
    folder, _ = sklearn_folder(tmp_path / "models", "good", "1.0.0")
    tar_folder(folder, model_site.root / "good.tar.gz")
    tls_site, _ = https_model_site
    tar_folder(folder, tls_site.root / "good.tar.gz")
    escaping_archive(model_site.root / "escape.tar.gz")
    closed = free_port()  # nothing listens there
    cases = {
        "bad-sha": ({"uri": f"{model_site.url}/good.tar.gz", "sha256": "0" * 64},
                    "FetchSha256Mismatch", "sha256"),
        "unreachable": ({"uri": f"http://{model_site.url.split('//')[1].split(':')[0]}:{closed}"
                                f"/m.tar.gz"}, "FetchSourceUnreadable", str(closed)),
        "unsafe": ({"uri": f"{model_site.url}/escape.tar.gz"}, "FetchUnsafeArtifact", "escape"),
        "untrusted": ({"uri": f"{tls_site.url}/good.tar.gz"}, "FetchSourceUnreadable",
                      "TLS certificate not trusted"),
        "no-ca-map": ({"uri": f"{tls_site.url}/good.tar.gz", "caBundle": {"configMap": "nope"}},
                      "FetchSourceUnreadable", "spec.model.caBundle"),
    }
    for name, (model, _, _) in cases.items():
        realpods.apply(on_real_node(base_mlmodel(name, model=model), cpu="50m"))
    for name, (_, reason, needle) in cases.items():
        cond = realpods.wait_condition(name, "Ready", "False", reason, timeout=60)
        ready = next(c for c in cond["status"]["conditions"] if c["type"] == "Ready")
        assert needle in ready["message"], ready
        assert ready_endpoints(realpods, name) == [], f"{name} has a ready endpoint"


def test_logs_and_exec_on_runtime_pods(realpods, on_real_node):
    """A user's debugging path: kubectl logs and kubectl exec work on runtime pods."""
    configmap, mlmodel = example("xgboost-configmap.yaml")
    realpods.apply(configmap)
    realpods.apply(on_real_node(mlmodel))
    realpods.wait_ready("tiny-xgb", timeout=120)
    logs = realpods.kubectl("logs", "deploy/tiny-xgb", "-c", "runtime").stdout
    assert '"message":"model loaded"' in logs and '"model_name":"tiny-xgb"' in logs, logs[-2000:]
    fetch_logs = realpods.kubectl("logs", "deploy/tiny-xgb", "-c", "fetch-model").stdout
    assert "tiny-xgb" in fetch_logs, fetch_logs
    out = kubectl(  # -n before `--`: MLModels.kubectl appends it, which exec would pass on
        "exec", "-n", realpods.ns, "deploy/tiny-xgb", "-c", "runtime", "--", "python", "-c",
        "import os, urllib.request as u; print(os.getuid()); "
        "print(u.urlopen('http://127.0.0.1:8000/v2/health/ready').status)",
        kubeconfig=realpods.kubeconfig,
    ).stdout.split()
    assert out == ["10001", "200"], out
