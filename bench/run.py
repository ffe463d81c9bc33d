"""Side-by-side serving benchmark: the seed design, MLServer and this runtime, one server
process each, same models, same machine, same run; prints ONE table.

    .venv/bin/python bench/run.py                 # everything, 5 s per measurement
    .venv/bin/python bench/run.py --duration 8 --servers project,mlserver --models rf10

Needs `wrk` (apt-get install -y wrk) and, for the seed and MLServer columns, the anchor
virtualenv made by bench/setup_anchor.sh (default /tmp/venv-anchor). Load is loopback only
and bounded: each measurement is one `wrk -t1 -c{1,16,64} -d{duration}s`.

Scenarios (rows/s = requests/s x rows per request):
- single: one-row /predict (MLServer: one-row V2 infer) at 1, 16 and 64 connections;
- multi64: one request carrying 64 rows, at 16 connections;
- batch64: /predict/batch with 64 one-row requests, at 16 connections (project only: the
  seed and MLServer have no such endpoint).

Models: rf10 (scikit-learn, MLServer's SKLearnModel), xgb100 (XGBoost, XGBoostModel) and
lgbm100 (LightGBM, LightGBMModel); see make_models.py. Before measuring, each server's answers
to the single and multi64 bodies are kept and compared across servers (see `compare`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = {"rf10": 10, "xgb100": 50, "lgbm100": 50}
# MLServer's LightGBM runtime returns one output, "predict" = Booster.predict = P(class 1) for
# a binary model, whatever outputs the request names: its V2 bodies ask for that one only
V2_OUTPUTS = {"lgbm100": ["predict"]}
# labels must be equal; probabilities within this (XGBoost's are float32 in MLServer)
PROBA_TOL = 1e-6
PORTS = {"seed": 18520, "mlserver": 18530, "project": 18510}
MULTI_ROWS = 64


@dataclass
class Result:
    server: str
    model: str
    scenario: str
    conns: int
    rows_per_req: int
    rps: float
    p50: float
    p99: float
    errors: int
    non2xx: int
    requests: int

    @property
    def ok_rps(self) -> float:
        """Answered-with-2xx requests per second: shed (503) answers do not count."""
        if not self.requests:
            return 0.0
        return self.rps * (self.requests - self.non2xx) / self.requests

    @property
    def rows_s(self) -> float:
        return self.ok_rps * self.rows_per_req


def write_bodies(work: Path) -> None:
    rng = random.Random(0)
    for name, n in MODELS.items():
        rows = [[round(rng.uniform(-2, 2), 4) for _ in range(n)] for _ in range(MULTI_ROWS)]
        one = {"model_name": name, "features": {f"f{i}": [v] for i, v in enumerate(rows[0])},
               "correlation_id": "bench"}
        (work / f"{name}.single.json").write_text(json.dumps(one))
        multi = {"model_name": name, "correlation_id": "bench",
                 "features": {f"f{i}": [r[i] for r in rows] for i in range(n)}}
        (work / f"{name}.multi64.json").write_text(json.dumps(multi))
        batch = {"requests": [{"model_name": name,
                               "features": {f"f{i}": [r[i]] for i in range(n)}} for r in rows],
                 "batch_size": MULTI_ROWS}
        (work / f"{name}.batch64.json").write_text(json.dumps(batch))
        for tag, data in (("single", rows[:1]), ("multi64", rows)):
            v2 = {"inputs": [{"name": "input-0", "shape": [len(data), n], "datatype": "FP64",
                              "data": [v for r in data for v in r]}],
                  "outputs": [{"name": o}
                              for o in V2_OUTPUTS.get(name, ["predict", "predict_proba"])]}
            (work / f"{name}.{tag}.v2.json").write_text(json.dumps(v2))


def post_json(url: str, body: Path) -> Any:
    req = urllib.request.Request(url, data=body.read_bytes(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@dataclass
class Answer:
    """One server's predictions for one body, in a shape every server's answer fits."""

    labels: list[Any] | None  # predicted labels (MLServer's LightGBM runtime gives none)
    p1: list[float]  # P(class 1) per row (all benchmark models are binary)
    proba: list[list[float]] | None  # (rows, classes) when the server returns them all


def answers(server: str, model: str, work: Path) -> dict[str, Answer]:
    """The server's predictions for the single and multi64 bodies of `model`."""
    base = f"http://127.0.0.1:{PORTS[server]}"
    out = {}
    for scen in ("single", "multi64"):
        if server == "mlserver":
            r = post_json(f"{base}/v2/models/{model}/infer", work / f"{model}.{scen}.v2.json")
            outs = {o["name"]: o for o in r["outputs"]}
            if "predict_proba" in outs:  # SKLearnModel / XGBoostModel: labels + (rows, k)
                pp = outs["predict_proba"]
                k = pp["shape"][1]
                proba = [pp["data"][i:i + k] for i in range(0, len(pp["data"]), k)]
                out[scen] = Answer(outs["predict"]["data"], [row[1] for row in proba], proba)
            else:  # LightGBMModel: "predict" is Booster.predict, P(class 1) per row
                out[scen] = Answer(None, list(outs["predict"]["data"]), None)
        else:  # the project and the seed answer in the seed's shape
            r = post_json(f"{base}/predict", work / f"{model}.{scen}.json")
            probs = r["probabilities"]
            cols = [probs[f"class_{i}"] for i in range(len(probs))]
            rows = [list(row) for row in zip(*cols, strict=True)]
            out[scen] = Answer(r["prediction"], cols[1], rows)
    return out


def compare(got: dict[tuple[str, str], dict[str, Answer]]) -> tuple[str, bool]:
    """Every other server's answers against the project's, model by model: labels equal
    where both give labels, P(class 1) (and every class's probability where both give
    them) within PROBA_TOL; the largest difference is printed, 0 meaning identical."""
    lines, ok = [], True
    for (server, model), theirs in sorted(got.items()):
        mine = got.get(("project", model))
        if server == "project" or mine is None:
            continue
        if not theirs or not mine:
            ok = False
            lines.append(f"- {model} {server} vs project: no readable answer: MISMATCH")
            continue
        worst, same_labels, checked = 0.0, True, []
        for scen, a in theirs.items():
            b = mine[scen]
            if a.labels is not None and b.labels is not None:
                same_labels &= [str(x) for x in a.labels] == [str(x) for x in b.labels]
            flat_a, flat_b = list(a.p1), list(b.p1)
            if a.proba is not None and b.proba is not None:
                flat_a += [x for row in a.proba for x in row]
                flat_b += [x for row in b.proba for x in row]
            if len(flat_a) != len(flat_b):  # not even the same shape
                same_labels, worst = False, float("inf")
                continue
            worst = max([worst] + [abs(x - y) for x, y in zip(flat_a, flat_b, strict=True)])
            checked.append(f"{scen} ({len(a.p1)} rows)")
        what = ("labels and probabilities" if theirs["single"].labels is not None
                else "its P(class 1) against the project's class_1 probability")
        good = same_labels and worst <= PROBA_TOL
        ok &= good
        labels = ("none from MLServer" if theirs["single"].labels is None
                  else "equal" if same_labels else "DIFFER")
        lines.append(f"- {model} {server} vs project, {' + '.join(checked)}: {what}; labels "
                     f"{labels}, max |diff| {worst:.3g} "
                     f"(tolerance {PROBA_TOL:g}): {'SAME' if good else 'MISMATCH'}")
    return "\n".join(lines), ok


def post_ok(url: str, body: Path) -> bool:
    req = urllib.request.Request(url, data=body.read_bytes(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except Exception:
        return False


def start(server: str, work: Path, models: Path, anchor: Path) -> subprocess.Popen[bytes]:
    port = PORTS[server]
    log = open(work / f"{server}.log", "wb")  # noqa: SIM115 - closed with the process
    env = dict(os.environ)
    if server == "seed":
        env["MODELS_DIR"] = str(models / "anchor")
        cmd = [str(anchor / "bin" / "uvicorn"), "seed_baseline:app", "--port", str(port),
               "--log-level", "warning"]
        return subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log, stderr=log)
    if server == "mlserver":
        ms = work / "mlserver"
        shutil.rmtree(ms, ignore_errors=True)
        shutil.copytree(models / "anchor", ms)
        (ms / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": port + 1, "metrics_port": port + 2,
            # in-process inference: MLServer's worker pool crashes with current uvloop
            "parallel_workers": 0}))
        return subprocess.Popen([str(anchor / "bin" / "mlserver"), "start", "."], cwd=ms,
                                env=env, stdout=log, stderr=log)
    env["LOG_LEVEL"] = "warning"
    cmd = [sys.executable, "-m", "serving_runtime", "--port", str(port), "--host", "127.0.0.1",
           "--models-dir", str(models / "project"), "--workers", "1"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)


def measure(server: str, model: str, work: Path, duration: int,
            scenarios: list[str]) -> list[Result]:
    port = PORTS[server]
    base = f"http://127.0.0.1:{port}"
    out = []
    plan: list[tuple[str, int, int]] = []  # (scenario, connections, rows per request)
    for scen in scenarios:
        if scen == "single":
            plan += [(scen, c, 1) for c in (1, 16, 64)]
        elif scen == "multi64" or server == "project":
            plan.append((scen, 16, MULTI_ROWS))
    for scen, c, rows in plan:
        if server == "mlserver":
            path, body = f"/v2/models/{model}/infer", work / f"{model}.{scen}.v2.json"
        elif scen == "batch64":
            path, body = "/predict/batch", work / f"{model}.batch64.json"
        else:
            path, body = "/predict", work / f"{model}.{scen}.json"
        if not any(post_ok(base + path, body) or time.sleep(1) for _ in range(10)):
            print(f"  {server} {model} {scen}: not answering 200, skipped", file=sys.stderr)
            continue
        r = _wrk(base, path, body, c, duration)
        out.append(Result(server, model, scen, c, rows, *r))
        res = out[-1]
        print(f"  {server:8s} {model:6s} {scen:8s} c={c:<3d} rps={r[0]:9.1f} "
              f"ok_rows/s={res.rows_s:10.1f} p50={r[1]:7.2f}ms p99={r[2]:8.2f}ms "
              f"err={r[3]} non2xx={r[4]}", file=sys.stderr)
    return out


def _wrk(base: str, path: str, body: Path, conns: int, duration: int) -> tuple[float, ...]:
    env = dict(os.environ, BODY=str(body), PATH_=path)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "-s", str(HERE / "post.lua"), base],
        env=env, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"RESULT rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) errors=(\d+) "
                  r"non2xx=(\d+) requests=(\d+)", out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    return (float(m[1]), float(m[2]), float(m[3]), int(m[4]), int(m[5]), int(m[6]))


def wait_ready(server: str, model: str, work: Path, proc: subprocess.Popen[bytes]) -> bool:
    port = PORTS[server]
    if server == "mlserver":
        url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
        body = work / f"{model}.single.v2.json"
    else:
        url, body = f"http://127.0.0.1:{port}/predict", work / f"{model}.single.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if post_ok(url, body):
            return True
        time.sleep(0.5)
    return False


def table(results: list[Result]) -> str:
    lines = ["| server | model | scenario | conns | req/s (2xx) | rows/s (2xx) | p50 ms | p99 ms "
             "| socket errors | 503 shed / non-2xx |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.server} | {r.model} | {r.scenario} | {r.conns} | {r.ok_rps:,.0f} | "
                     f"{r.rows_s:,.0f} | {r.p50:.2f} | {r.p99:.2f} | {r.errors} | {r.non2xx} |")
    return "\n".join(lines)


def _get(results: list[Result], server: str, model: str, scen: str, c: int
         ) -> Result | None:
    for r in results:
        if (r.server, r.model, r.scenario, r.conns) == (server, model, scen, c):
            return r
    return None


def ratios(results: list[Result]) -> str:
    """project / MLServer 2xx rows/s, per model and scenario of this run."""
    lines = []
    for model in dict.fromkeys(r.model for r in results):
        parts = []
        for scen, c in (("single", 1), ("single", 16), ("single", 64), ("multi64", 16)):
            p, m = _get(results, "project", model, scen, c), _get(results, "mlserver", model,
                                                                   scen, c)
            if p and m and m.rows_s > 0:
                parts.append(f"{scen} c={c} {p.rows_s / m.rows_s:.1f}x")
        if parts:
            lines.append(f"- {model}: " + ", ".join(parts))
    return "\n".join(lines)


def targets(results: list[Result]) -> str:
    def get(server: str, model: str, scen: str, c: int) -> Result | None:
        return _get(results, server, model, scen, c)

    lines = []
    for model, factor in (("rf10", 20), ("xgb100", 10)):
        p, m = get("project", model, "single", 16), get("mlserver", model, "single", 16)
        if p and m and m.ok_rps > 0:
            ratio = p.ok_rps / m.ok_rps
            ok = ratio >= factor and p.p99 <= 5.0
            lines.append(f"- {model} single c=16: {ratio:.1f}x MLServer (target >= {factor}x), "
                         f"p99 {p.p99:.2f} ms (target <= 5): {'MET' if ok else 'NOT MET'}")
        p64 = get("project", model, "single", 64)
        if p64:
            ok = p64.errors == 0 and p64.p99 <= 20.0
            lines.append(f"- {model} single c=64: {p64.errors} socket errors, p99 {p64.p99:.2f} "
                         f"ms, {p64.non2xx} shed (503) (target: 0 errors, p99 <= 20): "
                         f"{'MET' if ok else 'NOT MET'}")
        if p:
            for scen in ("multi64", "batch64"):
                q = get("project", model, scen, 16)
                if q:
                    ratio = q.rows_s / p.ok_rps if p.ok_rps else 0.0
                    lines.append(f"- {model} {scen} c=16: {q.rows_s:,.0f} rows/s = {ratio:.1f}x "
                                 f"single-row rate (target >= 5x): "
                                 f"{'MET' if ratio >= 5 else 'NOT MET'}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--servers", default="seed,mlserver,project")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--scenarios", default="single,multi64,batch64")
    ap.add_argument("--anchor-venv", default=os.environ.get("ANCHOR_VENV", "/tmp/venv-anchor"))
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/n1v1-bench"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = work / "models"
    names = args.models.split(",")
    if unknown := [n for n in names if n not in MODELS]:
        print(f"unknown models {unknown}: one of {', '.join(MODELS)}", file=sys.stderr)
        return 2
    if not all((models / side / n).exists() for n in names for side in ("project", "anchor")):
        subprocess.run([sys.executable, str(HERE / "make_models.py"), str(models)], check=True,
                       cwd=REPO)
    write_bodies(work)
    anchor = Path(args.anchor_venv)
    servers = args.servers.split(",")
    needs_anchor = any(s in ("seed", "mlserver") for s in servers)
    if needs_anchor and not (anchor / "bin" / "mlserver").exists():
        print(f"no anchor venv at {anchor}: run bench/setup_anchor.sh", file=sys.stderr)
        return 2
    results: list[Result] = []
    got: dict[tuple[str, str], dict[str, Answer]] = {}
    for server in servers:
        for model in names:
            proc = start(server, work, models, anchor)
            try:
                if not wait_ready(server, model, work, proc):
                    print(f"{server} never answered for {model}; log in {work}/{server}.log",
                          file=sys.stderr)
                    continue
                try:
                    got[server, model] = answers(server, model, work)
                except Exception as exc:  # reported as a mismatch by compare
                    print(f"  {server} {model}: unreadable answer: {exc!r}", file=sys.stderr)
                    got[server, model] = {}
                results += measure(server, model, work, args.duration,
                                   args.scenarios.split(","))
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print(f"\nN1V1 serving benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, one server process "
          f"each, wrk -t1 -d{args.duration}s on loopback\n")
    print(table(results))
    print("\nproject / MLServer, rows/s (2xx):")
    print(ratios(results))
    print("\nTargets (issue 7):")
    print(targets(results))
    same, ok = compare(got)
    print("\nPredictions, same bodies (each server's answers kept before wrk loads it):")
    print(same or "- only one server: nothing to compare")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
