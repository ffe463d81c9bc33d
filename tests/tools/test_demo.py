"""`make demo` prints curl commands that work as printed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from tests.support.runtime_helpers import REPO, free_port


def test_demo_prints_working_curls(tmp_path):
    # scripts/test.sh installs curl when the machine has none
    assert shutil.which("curl"), "the curl binary is needed (apt-get install curl)"
    port = free_port()
    out_path = tmp_path / "demo.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serving_runtime.tools.demo", "--port",
                                 str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "Ctrl+C stops the server" not in out_path.read_text():
                assert proc.poll() is None, out_path.read_text()
                assert time.monotonic() < deadline, out_path.read_text()
                time.sleep(0.2)
            curls = [ln.strip() for ln in out_path.read_text().splitlines()
                     if ln.strip().startswith("curl ")]
            assert len(curls) == 5
            results = [subprocess.run(["bash", "-c", c], capture_output=True, text=True,
                                      timeout=30) for c in curls]
        finally:
            proc.terminate()
            proc.wait(20)
    iris, cancer, lgbm, v2, health = (json.loads(r.stdout) for r in results)
    assert iris["prediction"] == [0, 2] and iris["correlation_id"] == "demo-1"
    assert set(iris["probabilities"]) == {"class_0", "class_1", "class_2"}
    assert cancer["prediction"][0] in (0, 1) and cancer["model_version"] == "1.0.0"
    # LightGBM regressor under the original design document's model name
    assert isinstance(lgbm["prediction"][0], float) and lgbm["probabilities"] is None
    assert 25 < lgbm["prediction"][0] < 346  # within the diabetes target's range
    assert v2["outputs"][0]["data"] == [0]
    assert health["status"] == "healthy"
    assert sorted(health["models_loaded"]) == ["breast-cancer", "iris", "your_model"]
