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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = {"rf10": 10, "xgb100": 50}
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
                  "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
            (work / f"{name}.{tag}.v2.json").write_text(json.dumps(v2))


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


def targets(results: list[Result]) -> str:
    def get(server: str, model: str, scen: str, c: int) -> Result | None:
        for r in results:
            if (r.server, r.model, r.scenario, r.conns) == (server, model, scen, c):
                return r
        return None

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
    ap.add_argument("--models", default="rf10,xgb100")
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
    if not (models / "project" / "rf10").exists():
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
    for server in servers:
        for model in args.models.split(","):
            proc = start(server, work, models, anchor)
            try:
                if not wait_ready(server, model, work, proc):
                    print(f"{server} never answered for {model}; log in {work}/{server}.log",
                          file=sys.stderr)
                    continue
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
    print("\nTargets (issue 7):")
    print(targets(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
