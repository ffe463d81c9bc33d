"""Throughput cost of shadow mode: one-row /predict at 16 keep-alive connections against a
server whose model has a shadow challenger, side by side with the same server without one.

    .venv/bin/python bench/shadow_cost.py                  # xgb100, 5 rounds of 8 s each side
    .venv/bin/python bench/shadow_cost.py --seconds 6 --rounds 4 --model rf10

Two `python -m serving_runtime --workers 1` processes on 127.0.0.1 read the same MODELS_DIR:
the champion `<model>/` and its challenger `.challengers/<model>/` (the same kind and size of
model, retrained on a bootstrap resample of the data: a different model, as a real
challenger is). Only the "on" server gets CHALLENGERS='{"<model>": {"mode": "shadow"}}'; the
"off" server ignores the challenger folder. Both stay up for the whole run and are loaded in
turn, off/on/off/on..., one round at a time: the machine's speed drifts (and varies 3x
between machines), so only the medians of one run compare.

Load: `wrk -t1 -c16` with post.lua when wrk is installed (as bench/run.py), else a built-in
asyncio client (uvloop, one pre-built request per connection, 16 keep-alive connections,
one request in flight on each) whose own CPU use is printed, so a client-bound run shows.
Between rounds the shadow queue is left to drain (every offered row evaluated or dropped)
so its backlog never runs into the next "off" round. Models: bench/make_models.py's rf10
and xgb100 (same data and seeds) as champions. "server CPU us/req" is the server process's
CPU time (all threads, the shadow worker's included) during a round over its 200 answers;
the shadow rows and model-call seconds come from the "on" server's /metrics. Work files
(models, server logs) go to a new /tmp/n1v1-shadow-* folder; ports 18540 (off), 18541 (on).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PORTS = {"off": 18540, "on": 18541}
CONNS = 16
# the runtime's default SHADOW_QUEUE_ROWS; passed explicitly so the figure is the one shown
QUEUE_ROWS = 4096


# --- models --------------------------------------------------------------------------


def make_models(models: Path, name: str) -> int:
    """Champion and challenger folders for `name`; returns the number of features.

    The champion is bench/make_models.py's model; the challenger the same estimator fitted
    on a bootstrap resample (seed 1), so it is a different model of the same size — XGBoost
    without subsampling would grow identical trees from another random_state alone."""
    from sklearn.datasets import make_classification

    from serving_runtime import save_model
    from serving_runtime.models.folder_format import challenger_folder

    n = {"rf10": 10, "xgb100": 50}[name]
    X, y = make_classification(n_samples=1000, n_features=n, random_state=0)
    boot = np.random.default_rng(1).integers(0, len(X), len(X))

    def fit(Xf: np.ndarray, yf: np.ndarray, seed: int) -> Any:
        if name == "rf10":
            from sklearn.ensemble import RandomForestClassifier
            return RandomForestClassifier(n_estimators=10, random_state=seed).fit(Xf, yf)
        import xgboost as xgb
        return xgb.XGBClassifier(n_estimators=100, random_state=seed).fit(Xf, yf)

    names = [f"f{i}" for i in range(n)]
    save_model(fit(X, y, 0), models / name, version="v1", feature_names=names, sample=X[:4])
    save_model(fit(X[boot], y[boot], 1), challenger_folder(models, name), version="v2",
               feature_names=names, sample=X[:4])
    return n


# --- servers -------------------------------------------------------------------------


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` (a left-over server would answer for ours)."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def start(side: str, models: Path, name: str, work: Path) -> subprocess.Popen[bytes]:
    """One server process; only the "on" side is told about the challenger."""
    env = dict(os.environ, LOG_LEVEL="warning", SHADOW_QUEUE_ROWS=str(QUEUE_ROWS))
    env.pop("CHALLENGERS", None)
    if side == "on":
        env["CHALLENGERS"] = json.dumps({name: {"mode": "shadow"}})
    log = open(work / f"{side}.log", "wb")  # noqa: SIM115 - closed with the process
    cmd = [sys.executable, "-m", "serving_runtime", "--port", str(PORTS[side]),
           "--host", "127.0.0.1", "--models-dir", str(models), "--workers", "1"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)


def post(port: int, body: bytes) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
            return r.status
    except Exception:
        return 0


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def wait_ready(proc: subprocess.Popen[bytes], port: int, body: bytes) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if post(port, body) == 200:
            return True
        time.sleep(0.5)
    return False


def shadow_rows(port: int) -> dict[str, float]:
    """shadow_rows_total by result, and the shadow worker's model calls and their seconds
    by role (shadow_predict_seconds count and sum), from GET /metrics."""
    out: dict[str, float] = {}
    for line in get(port, "/metrics").splitlines():
        m = re.match(r'shadow_rows_total\{[^}]*result="(\w+)"[^}]*\} ([\d.e+]+)', line)
        if m:
            out[m[1]] = out.get(m[1], 0.0) + float(m[2])
        m = re.match(r'shadow_predict_seconds_(sum|count)\{[^}]*role="(\w+)"[^}]*\} ([\d.e+]+)',
                     line)
        if m:
            key = f"{m[2]}_s" if m[1] == "sum" else f"{m[2]}_calls"
            out[key] = out.get(key, 0.0) + float(m[3])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the server process (all its threads: the shadow worker included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(port: int, offered: int, timeout_s: float = 30.0) -> dict[str, float]:
    """Wait until every row offered to the shadow so far is accounted for (evaluated,
    dropped or failed), so one round's backlog does not load the next round."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = shadow_rows(port)
        done = rows.get("evaluated", 0) + rows.get("dropped", 0) + rows.get("failed", 0)
        if done >= offered or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


# --- load ----------------------------------------------------------------------------


@dataclass
class Load:
    rps: float  # 200 answers per second
    p50_ms: float
    p99_ms: float
    ok: int  # 200 answers
    bad: int  # other answers and socket errors
    client_cpu: float | None = None  # built-in client's CPU seconds per wall second


class _Conn(asyncio.Protocol):
    """One keep-alive connection, one request in flight: send, read the whole answer
    (Content-Length), record the latency, send again until the deadline."""

    def __init__(self, request: bytes, deadline: float, lat: list[float],
                 status: list[int], done: asyncio.Future[None]) -> None:
        self.request, self.deadline, self.lat, self.status = request, deadline, lat, status
        self.done, self.buf, self.t0 = done, b"", 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.t0 = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end].decode("latin-1")
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        if m is None:  # the runtime always sends a length; anything else is an error
            self.status.append(0)
            self._finish()
            return
        end = head_end + 4 + int(m[1])
        if len(self.buf) < end:
            return
        now = time.perf_counter()
        self.lat.append(now - self.t0)
        self.status.append(int(head[9:12]))
        self.buf = self.buf[end:]
        if now < self.deadline:
            self._send()
        else:
            self._finish()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.status.append(0)
            self.done.set_result(None)


async def _pool(port: int, request: bytes, seconds: float) -> tuple[list[float], list[int]]:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    status: list[int] = []
    deadline = time.perf_counter() + seconds
    futures: list[asyncio.Future[None]] = []
    for _ in range(CONNS):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            functools.partial(_Conn, request, deadline, lat, status, done), "127.0.0.1", port)
        futures.append(done)
    # a connection the server never answers must not hang the run
    await asyncio.wait_for(asyncio.gather(*futures), seconds + 30)
    return lat, status


def builtin_load(port: int, body: bytes, seconds: float, path: str = "/predict") -> Load:
    """16 keep-alive connections for `seconds`, from this process (uvloop when present)."""
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    c0, t0 = time.process_time(), time.perf_counter()
    lat, status = runner(_pool(port, request, seconds))
    wall = time.perf_counter() - t0
    ok_lat = sorted(x for x, s in zip(lat, status, strict=False) if s == 200)
    ok = len(ok_lat)
    if not ok:
        return Load(0.0, 0.0, 0.0, 0, len(status), None)
    p = np.percentile(np.asarray(ok_lat), [50, 99]) * 1000
    return Load(ok / wall, float(p[0]), float(p[1]), ok, len(status) - ok,
                (time.process_time() - c0) / wall)


def wrk_load(port: int, body_file: Path, seconds: float) -> Load:
    """`wrk -t1 -c16` with bench/post.lua, as bench/run.py measures."""
    env = dict(os.environ, BODY=str(body_file), PATH_="/predict")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNS}", f"-d{int(seconds)}s", "-s", str(HERE / "post.lua"),
         f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True,
        timeout=seconds + 60)
    m = re.search(r"RESULT rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) errors=(\d+) "
                  r"non2xx=(\d+) requests=(\d+)", out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    requests, bad = int(m[6]), int(m[4]) + int(m[5])
    rps = float(m[1]) * (requests - int(m[5])) / max(requests, 1)
    return Load(rps, float(m[2]), float(m[3]), requests - int(m[5]), bad)


# --- the run -------------------------------------------------------------------------


@dataclass
class Side:
    rounds: list[Load] = field(default_factory=list)
    cpu_per_req_us: list[float] = field(default_factory=list)  # server CPU per 200 answer
    evaluated: float = 0.0  # shadow rows over the measured rounds (on side only)
    dropped: float = 0.0
    failed: float = 0.0
    champion_s: float = 0.0  # shadow worker's model-call seconds, by role
    shadow_s: float = 0.0
    batches: float = 0.0  # shadow worker batches (one champion + one challenger call each)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.rounds)


def table(sides: dict[str, Side]) -> str:
    lines = ["| shadow | req/s (median) | req/s per round | p50 ms | p99 ms | server CPU "
             "us/req | non-200 | shadow rows evaluated / dropped |",
             "|---|---|---|---|---|---|---|---|"]
    for key, s in sides.items():
        rows = "-" if key == "off" else (
            f"{s.evaluated:,.0f} / {s.dropped:,.0f} "
            f"({100 * s.dropped / max(s.evaluated + s.dropped, 1):.0f}% dropped)")
        lines.append(
            f"| {key} | {s.median('rps'):,.0f} | "
            f"{', '.join(f'{r.rps:,.0f}' for r in s.rounds)} | {s.median('p50_ms'):.2f} | "
            f"{s.median('p99_ms'):.2f} | {statistics.median(s.cpu_per_req_us):.0f} | "
            f"{sum(r.bad for r in s.rounds)} | {rows} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of load per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per configuration")
    ap.add_argument("--model", choices=("xgb100", "rf10"), default="xgb100")
    ap.add_argument("--client", choices=("auto", "wrk", "builtin"), default="auto",
                    help="load generator: wrk when installed (auto), else the asyncio pool")
    args = ap.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    work = Path(tempfile.mkdtemp(prefix="n1v1-shadow-"))
    models = work / "models"
    n = make_models(models, args.model)
    rng = np.random.default_rng(0)
    body = json.dumps({"model_name": args.model, "correlation_id": "bench",
                       "features": {f"f{i}": [round(float(v), 4)]
                                    for i, v in enumerate(rng.uniform(-2, 2, n))}}).encode()
    body_file = work / "single.json"
    body_file.write_bytes(body)

    def load(port: int, seconds: float) -> Load:
        if use_wrk:
            return wrk_load(port, body_file, seconds)
        return builtin_load(port, body, seconds)

    if busy := [port for port in PORTS.values() if not port_free(port)]:
        print(f"ports {busy} already in use (a left-over server?)", file=sys.stderr)
        return 2
    procs = {side: start(side, models, args.model, work) for side in PORTS}
    offered = 0  # rows offered to the shadow so far: one per 200 answer of the "on" server
    try:
        for side, proc in procs.items():
            if not wait_ready(proc, PORTS[side], body):
                print(f"{side} server never answered; log in {work}/{side}.log",
                      file=sys.stderr)
                return 1
        offered += 1  # wait_ready's answer
        health = get(PORTS["on"], "/health")
        if '"shadow"' not in health or '"serving"' not in health:
            print(f"the shadow challenger is not serving: {health}", file=sys.stderr)
            return 1
        for side in PORTS:  # warm-up: first-call costs, connection set-up, allocator
            warm = load(PORTS[side], min(2.0, args.seconds))
            offered += warm.ok if side == "on" else 0
        before = drain(PORTS["on"], offered)
        sides = {"off": Side(), "on": Side()}
        for i in range(args.rounds):
            for side in PORTS:  # off, on, off, on, ...
                pid, port = procs[side].pid, PORTS[side]
                c0 = cpu_seconds(pid)
                r = load(port, args.seconds)
                sides[side].rounds.append(r)
                # the server's CPU while loaded (read before the drain below)
                sides[side].cpu_per_req_us.append(1e6 * (cpu_seconds(pid) - c0) / max(r.ok, 1))
                cpu = f" client CPU {r.client_cpu:.0%}" if r.client_cpu is not None else ""
                print(f"  round {i + 1} shadow {side:3s}: {r.rps:8,.0f} req/s  p50 "
                      f"{r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  non-200 {r.bad}{cpu}",
                      file=sys.stderr)
                if side == "on":
                    offered += r.ok
                    drain(port, offered)
        after = drain(PORTS["on"], offered)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    on = sides["on"]
    on.evaluated = after.get("evaluated", 0) - before.get("evaluated", 0)
    on.dropped = after.get("dropped", 0) - before.get("dropped", 0)
    on.failed = after.get("failed", 0) - before.get("failed", 0)
    on.champion_s = after.get("champion_s", 0) - before.get("champion_s", 0)
    on.shadow_s = after.get("shadow_s", 0) - before.get("shadow_s", 0)
    on.batches = after.get("champion_calls", 0) - before.get("champion_calls", 0)
    client = "wrk -t1 -c16 (post.lua)" if use_wrk else "built-in asyncio client, 16 conns"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\nShadow cost, {args.model} one-row /predict, {when}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, --workers 1, "
          f"{client}, {args.rounds} rounds x {args.seconds:g} s per side, alternating\n")
    print(table(sides))
    ratio = on.median("rps") / max(sides["off"].median("rps"), 1e-9)
    print(f"\nthroughput on/off: {ratio:.3f} (shadow costs {100 * (1 - ratio):.1f}%; "
          f"target <= 10%: {'MET' if ratio >= 0.9 else 'NOT MET'})")
    # each "on" round against the "off" round just before it: the spread shows the noise
    per_round = [b.rps / a.rps if a.rps else 0.0
                 for a, b in zip(sides["off"].rounds, on.rounds, strict=True)]
    print(f"per-round on/off: {', '.join(f'{x:.3f}' for x in per_round)}")
    rows = max(on.evaluated, 1)
    print(f"shadow worker: {on.evaluated:,.0f} rows evaluated, {on.dropped:,.0f} dropped, "
          f"{on.failed:,.0f} failed (queue {QUEUE_ROWS} rows), in {on.batches:,.0f} batches "
          f"({on.evaluated / max(on.batches, 1):.1f} rows each); model calls "
          f"{1e6 * on.champion_s / rows:.1f} us/row champion (its own calls on the hot path) + "
          f"{1e6 * on.shadow_s / rows:.1f} us/row challenger")
    return 0


if __name__ == "__main__":
    sys.exit(main())
