"""EXIT_ON_LOAD_FAILURE (serving_runtime/server/lifecycle.py): a pod whose model fails to load at
start-up exits 3 with the reason in its termination message, instead of staying live and
never ready. Real processes, real model folders; the golden sample.json is made wrong."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from serving_runtime.server.lifecycle import (
    EXIT_LOAD_FAILURE,
    TERMINATION_MESSAGE_MAX_BYTES,
    one_line,
    write_termination_message,
)
from tests.support.runtime_helpers import RuntimeServer

BAD_REASON = "model bad-rf failed to load: golden check failed: probabilities differ from " \
             "sample.json"


def _spoil_probabilities(folder: Path) -> None:
    """sample.json keeps its predictions but expects other probabilities."""
    path = folder / "sample.json"
    doc = json.loads(path.read_text())
    probs = doc["expected"]["probabilities"]
    for key in probs:
        probs[key] = [min(1.0, p + 0.25) if p < 0.5 else p - 0.25 for p in probs[key]]
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good-rf (passes its golden check) and bad-rf (sample.json probabilities wrong)."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from serving_runtime import save_model

    root = tmp_path_factory.mktemp("exit") / "folders"
    X, y = make_classification(n_samples=300, n_features=4, random_state=0)
    est = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    for name in ("good-rf", "bad-rf"):
        save_model(est, root / name, version="1", sample=X[:5])
    _spoil_probabilities(root / "bad-rf")
    return root


def models_dir_with(tmp_path: Path, folders: Path, *names: str) -> Path:
    d = tmp_path / "models"
    for name in names:
        shutil.copytree(folders / name, d / name)
    return d


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_load_failure_exits_3_with_termination_message(
        start_server, tmp_path: Path, model_folders: Path, workers: int) -> None:
    models = models_dir_with(tmp_path, model_folders, "good-rf", "bad-rf")  # discovered
    term = tmp_path / "termination-log"
    srv: RuntimeServer = start_server(models, env={
        "EXIT_ON_LOAD_FAILURE": "true", "TERMINATION_MESSAGE_PATH": str(term)},
        args=["--workers", str(workers)])
    rc = srv.proc.wait(120)
    assert rc == EXIT_LOAD_FAILURE, srv.logs()[-3000:]
    assert term.read_text() == BAD_REASON  # one line, names the model (not good-rf)
    assert BAD_REASON in srv.logs()


@pytest.mark.slow
def test_unwritable_termination_path_still_exits_3(start_server, tmp_path: Path,
                                                   model_folders: Path) -> None:
    models = models_dir_with(tmp_path, model_folders, "bad-rf")
    srv: RuntimeServer = start_server(models, args=[
        "--exit-on-load-failure", "--termination-message-path",
        str(tmp_path / "no-such-dir" / "termination-log")])
    assert srv.proc.wait(120) == EXIT_LOAD_FAILURE, srv.logs()[-3000:]
    assert "termination message not written" in srv.logs()
    assert not (tmp_path / "no-such-dir").exists()


@pytest.mark.slow
def test_default_stays_up_not_ready(start_server, tmp_path: Path,
                                    model_folders: Path) -> None:
    models = models_dir_with(tmp_path, model_folders, "good-rf", "bad-rf")
    term = tmp_path / "termination-log"
    srv: RuntimeServer = start_server(models, env={"TERMINATION_MESSAGE_PATH": str(term)})
    doc = srv.wait_startup_done()
    assert doc["ready"] is False
    assert any("bad-rf" in r and "golden check failed" in r for r in doc["reasons"]), doc
    time.sleep(1.0)  # an exit would come right after the loading
    assert srv.proc.poll() is None
    assert srv.client.get("/v2/health/ready").status_code == 503
    assert srv.client.get("/v2/health/live").status_code == 200
    assert not term.exists()


@pytest.mark.slow
def test_preload_scope_and_failed_hot_reload_do_not_exit(start_server, tmp_path: Path,
                                                         model_folders: Path) -> None:
    """Only expected models count (PRELOAD_MODELS), and only at start-up: a failed hot
    reload keeps the old version serving and the process up."""
    models = models_dir_with(tmp_path, model_folders, "good-rf", "bad-rf")
    term = tmp_path / "termination-log"
    srv: RuntimeServer = start_server(models, env={
        "EXIT_ON_LOAD_FAILURE": "true", "TERMINATION_MESSAGE_PATH": str(term),
        "PRELOAD_MODELS": "good-rf"})
    srv.wait_ready()
    _spoil_probabilities(models / "good-rf")
    assert srv.client.post("/reload/good-rf").status_code == 202
    deadline = time.monotonic() + 30
    while True:
        doc = srv.client.get("/health").json()
        if any("reload failed" in r for r in doc["reasons"]):
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)
    time.sleep(0.5)
    assert srv.proc.poll() is None
    assert srv.client.get("/v2/health/ready").status_code == 200
    r = srv.client.post("/predict", json={"model_name": "good-rf", "features": {
        "f0": [0.0], "f1": [0.0], "f2": [0.0], "f3": [0.0]}})
    assert r.status_code == 200
    assert not term.exists()


def test_termination_message_is_one_line_under_the_kubernetes_limit(tmp_path: Path) -> None:
    long = "model x failed to load:\n" + "é" * 5000
    msg = one_line(long)
    assert "\n" not in msg and msg.startswith("model x failed to load: é")
    assert len(msg.encode()) <= TERMINATION_MESSAGE_MAX_BYTES and msg.endswith("...")
    assert one_line("a\n b") == "a b"
    path = tmp_path / "termination-log"
    assert write_termination_message(path, msg) and path.read_text() == msg
    assert not write_termination_message(tmp_path / "missing" / "log", msg)
