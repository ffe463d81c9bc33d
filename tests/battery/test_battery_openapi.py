"""Schemathesis against the OpenAPI document a real running runtime serves.

The server is the battery's real `python -m serving_runtime` on loopback (the zoo's six
model folders). Schemathesis' CLI reads `/openapi.json` from it and runs every operation
through its examples, coverage, fuzzing and stateful phases with every check: no 5xx, only
documented status codes, content types and response headers, bodies matching the
documented schemas, schema-invalid requests refused, schema-valid ones accepted, 405 with
an Allow header for undocumented methods.

One allowance, stated where it applies: for /predict, /predict/batch and V2 infer,
whether a schema-valid body is acceptable depends on the model's feature names and count
(which no JSON schema of the route can state), so a 422 also counts as a correct answer to
schema-valid data there. Prints `schemathesis: N operations, M calls, K failures`.
N1V1_SOAK=1 runs 10x the examples per operation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

MODEL_DEPENDENT = r"^/(predict|predict/batch|v2/models/\{name\}(/versions/\{version\})?/infer)$"
CONFIG = f"""\
[[operations]]
include-path-regex = '{MODEL_DEPENDENT}'
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]
"""


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    return str(exe) if exe.exists() else "schemathesis"


def test_schemathesis_every_operation(zoo_server, soak: bool, tmp_path: Path) -> None:
    doc = httpx.get(f"{zoo_server.url}/openapi.json", timeout=30).json()
    documented = sorted(f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item)
    n = 100 if soak else 8
    rng_seed = int(os.environ.get("N1V1_FUZZ_SEED") or time.time_ns() % 1_000_000)
    report = tmp_path / "schemathesis.json"
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    cmd = [_schemathesis(), "--config-file", str(tmp_path / "schemathesis.toml"), "run",
           f"{zoo_server.url}/openapi.json", "--checks", "all", "--max-examples", str(n),
           "--seed", str(rng_seed), "--workers", "1", "--request-timeout", "30",
           "--report", "json", "--report-json-path", str(report), "--no-color"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    assert report.exists(), f"no report: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run = json.loads(report.read_text())
    ops = run["operations"]
    calls = run["test_cases"]["generated"]
    failures = sum(f["count"] for f in run["failures"])
    errors = sum(e["count"] for e in run["errors"])
    print(f"\nschemathesis: {ops['tested']} operations, {calls} calls, {failures} failures, "
          f"{errors} errors ({elapsed:.1f} s, seed {rng_seed}, {n} examples per operation)")
    for f in run["failures"]:
        print(f"schemathesis: {f['code']} {f['title']}: {f['count']} in "
              f"{', '.join(f['operations'])}")
    for e in run["errors"]:
        print(f"schemathesis: error {e['title']}: {e['count']}")
    summary = proc.stdout[proc.stdout.find("FAILURES"):][:6000] if failures or errors else ""
    assert ops["tested"] == len(documented) == ops["total"], (ops, documented)
    assert failures == 0 and errors == 0 and proc.returncode == 0, summary or proc.stdout[-4000:]
