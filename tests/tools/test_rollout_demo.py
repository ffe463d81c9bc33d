"""examples/rollouts/demo.sh (shown in docs/rollouts.md and the README) prints what the
split and the two models say it should: the canary's share is the hash's, the shadow's
disagreements are the rows where the two forests' labels differ."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
from sklearn.datasets import load_iris

from serving_runtime.models.folder import load_model
from serving_runtime.server.rollout import split_bucket
from tests.support.runtime_helpers import REPO, free_port


def test_rollout_demo_prints_the_split_and_the_disagreements(tmp_path):
    assert shutil.which("curl"), "the curl binary is needed (apt-get install curl)"
    env = {**os.environ, "PY": sys.executable, "PORT": str(free_port()), "TMPDIR": str(tmp_path)}
    done = subprocess.run(["examples/rollouts/demo.sh"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    def value(series: str) -> float:
        m = re.search(re.escape(series) + r" ([0-9.e+]+)", out)
        assert m, f"{series} not printed:\n{out}"
        return float(m.group(1))

    ids = [f"order-{i}" for i in range(1, 1001)] + ["order-1", "order-10"]
    canary = sum(split_bucket(i) < 1000 for i in ids)
    assert '"correlation_id":"order-10","model_version":"1.1.0"' in out
    assert value('rollout_requests_total{model_name="iris",role="canary",status="success",'
                 'version="1.1.0"}') == canary
    assert value('rollout_requests_total{model_name="iris",role="champion",status="success",'
                 'version="1.0.0"}') == len(ids) - canary

    # the folders the demo wrote: the disagreement count is the two models' own
    (models,) = tmp_path.glob("*/models")
    X = load_iris().data
    a = load_model(models / "iris").predict(X)[0]
    b = load_model(models / ".challengers" / "iris").predict(X)[0]
    assert "150 answers, versions ['1.0.0']" in out
    assert value('shadow_rows_total{model_name="iris",result="evaluated"}') == 150
    assert value('shadow_disagreements_total{model_name="iris"}') == np.count_nonzero(a != b)
