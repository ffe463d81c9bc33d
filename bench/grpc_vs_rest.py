"""The Open Inference Protocol over gRPC side by side with the same protocol over REST, one
server, one-row inference: latency at one connection, throughput at 16 requests in flight.

    .venv/bin/python bench/grpc_vs_rest.py                    # rf10 and xgb100, 3 rounds
    .venv/bin/python bench/grpc_vs_rest.py --seconds 4 --rounds 2 --model xgb100

One `python -m serving_runtime --workers 1` on 127.0.0.1 serves both: REST V2 on 18550
(`POST /v2/models/<m>/infer`, the JSON tensor body) and gRPC on 18551 (`ModelInfer`, the same
tensor as raw FP64 bytes, as tritonclient sends). The same request every time, built once:
the client's own encoding is not measured. Rounds alternate REST/gRPC (the machine's speed
drifts; only medians of one run compare). Clients, in this process:
- 1 connection: a blocking loop, one request after another (REST: one keep-alive socket;
  gRPC: one channel, a bytes-in/bytes-out unary call);
- 16 in flight: REST as bench/shadow_cost.py's asyncio client (16 keep-alive connections);
  gRPC one grpc.aio channel with 16 calls in flight (HTTP/2 streams: how gRPC clients
  share a connection).
"server CPU us/req" is the server process's CPU time over its answers; "client CPU" the
client's CPU seconds per wall second (both share 2 cores here, so a client-bound run shows).
Models: bench/shadow_cost.py's rf10 and xgb100 (the champion folder). Work files go to a
new /tmp/n1v1-grpc-bench-* folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from shadow_cost import Load, builtin_load, cpu_seconds, make_models, port_free  # noqa: E402

from serving_runtime import grpc_protocol as pb  # noqa: E402

REST_PORT, GRPC_PORT = 18550, 18551
INFLIGHT = 16


def start(models: Path, work: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LOG_LEVEL="warning", GRPC_PORT=str(GRPC_PORT))
    env.pop("CHALLENGERS", None)
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed with the process
    cmd = [sys.executable, "-m", "serving_runtime", "--port", str(REST_PORT),
           "--host", "127.0.0.1", "--models-dir", str(models), "--workers", "1"]
    return subprocess.Popen(cmd, cwd=HERE.parent, env=env, stdout=log, stderr=log)


def rest_request(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{REST_PORT}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def _read_answer(sock: socket.socket, buf: bytes) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head[9:12]), rest[length:]


def _summary(lat: list[float], ok: int, bad: int, wall: float, cpu: float) -> Load:
    if not lat:
        return Load(0.0, 0.0, 0.0, 0, bad, None)
    p = np.percentile(np.asarray(lat), [50, 99]) * 1000
    return Load(ok / wall, float(p[0]), float(p[1]), ok, bad, cpu / wall)


def rest_one_connection(request: bytes, seconds: float) -> Load:
    lat, ok, bad, buf = [], 0, 0, b""
    with socket.create_connection(("127.0.0.1", REST_PORT)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c0, t0 = time.process_time(), time.perf_counter()
        end = t0 + seconds
        while (now := time.perf_counter()) < end:
            sock.sendall(request)
            status, buf = _read_answer(sock, buf)
            if status == 200:
                ok += 1
                lat.append(time.perf_counter() - now)
            else:
                bad += 1
        return _summary(lat, ok, bad, time.perf_counter() - t0, time.process_time() - c0)


def _grpc_method(channel: Any) -> Any:
    # bytes in, bytes out: no client-side (de)serialisation in the measurement
    return channel.unary_unary(f"/{pb.SERVICE}/ModelInfer")


def grpc_one_connection(request: bytes, seconds: float) -> Load:
    import grpc

    lat, ok, bad = [], 0, 0
    with grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}") as channel:
        call = _grpc_method(channel)
        call(request, timeout=10)  # connect outside the measurement
        c0, t0 = time.process_time(), time.perf_counter()
        end = t0 + seconds
        while (now := time.perf_counter()) < end:
            try:
                call(request, timeout=10)
                ok += 1
                lat.append(time.perf_counter() - now)
            except grpc.RpcError:
                bad += 1
        return _summary(lat, ok, bad, time.perf_counter() - t0, time.process_time() - c0)


def grpc_inflight(request: bytes, seconds: float) -> Load:
    import grpc
    from grpc import aio

    async def run() -> tuple[list[float], int, int, float, float]:
        lat: list[float] = []
        counts = [0, 0]
        async with aio.insecure_channel(f"127.0.0.1:{GRPC_PORT}") as channel:
            call = _grpc_method(channel)
            await call(request, timeout=10)
            c0, t0 = time.process_time(), time.perf_counter()
            end = t0 + seconds

            async def worker() -> None:
                while (now := time.perf_counter()) < end:
                    try:
                        await call(request, timeout=10)
                        counts[0] += 1
                        lat.append(time.perf_counter() - now)
                    except grpc.RpcError:
                        counts[1] += 1

            await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
            return lat, counts[0], counts[1], time.perf_counter() - t0, time.process_time() - c0

    lat, ok, bad, wall, cpu = asyncio.run(run())
    return _summary(lat, ok, bad, wall, cpu)


def measure(proc: subprocess.Popen[bytes], fn: Any, *args: Any) -> tuple[Load, float]:
    """The load and the server's CPU microseconds per answer during it."""
    c0 = cpu_seconds(proc.pid)
    load: Load = fn(*args)
    return load, (cpu_seconds(proc.pid) - c0) / max(load.ok, 1) * 1e6


def wait_ready(proc: subprocess.Popen[bytes], request: bytes) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if rest_one_connection(request, 0.05).ok and grpc_ready():
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def grpc_ready() -> bool:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}") as channel:
        try:
            channel.unary_unary(f"/{pb.SERVICE}/ServerReady")(
                pb.ServerReadyRequest().SerializeToString(), timeout=2)
            return True
        except grpc.RpcError:
            return False


def median_load(loads: list[tuple[Load, float]]) -> dict[str, float]:
    return {"rps": statistics.median(x.rps for x, _ in loads),
            "p50": statistics.median(x.p50_ms for x, _ in loads),
            "p99": statistics.median(x.p99_ms for x, _ in loads),
            "cpu_us": statistics.median(c for _, c in loads),
            "client_cpu": statistics.median(x.client_cpu or 0.0 for x, _ in loads),
            "bad": sum(x.bad for x, _ in loads)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["rf10", "xgb100"], action="append")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    names = args.model or ["rf10", "xgb100"]
    for port in (REST_PORT, GRPC_PORT):
        if not port_free(port):
            print(f"port {port} is taken: stop what listens there first", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="n1v1-grpc-bench-"))
    models = work / "models"
    n_features = {name: make_models(models, name) for name in names}
    shutil.rmtree(models / ".challengers", ignore_errors=True)
    proc = start(models, work)
    rows = []
    try:
        for name in names:
            x = np.random.default_rng(0).normal(size=(1, n_features[name]))
            v2 = {"inputs": [{"name": "input-0", "shape": [1, n_features[name]],
                              "datatype": "FP64", "data": x.ravel().tolist()}]}
            path = f"/v2/models/{name}/infer"
            rest_req = rest_request(path, json.dumps(v2).encode())
            grpc_req = pb.v2_to_request(v2, name).SerializeToString()
            if not wait_ready(proc, rest_req):
                print(f"server not ready; see {work / 'server.log'}", file=sys.stderr)
                return 1
            runs: dict[tuple[str, str], list[tuple[Load, float]]] = {}
            for _ in range(args.rounds):
                for key, fn, a in [
                    (("REST", "1 conn"), rest_one_connection, (rest_req, args.seconds)),
                    (("gRPC", "1 conn"), grpc_one_connection, (grpc_req, args.seconds)),
                    (("REST", "16 in flight"), builtin_load,
                     (REST_PORT, json.dumps(v2).encode(), args.seconds, path)),
                    (("gRPC", "16 in flight"), grpc_inflight, (grpc_req, args.seconds)),
                ]:
                    runs.setdefault(key, []).append(measure(proc, fn, *a))
            for (proto, load), got in runs.items():
                rows.append((name, proto, load, median_load(got)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"\none server (--workers 1), one-row V2 inference, median of {args.rounds} rounds "
          f"of {args.seconds:g} s ({os.cpu_count()} CPUs, shared by client and server)\n")
    print("| model | protocol | load | req/s | p50 ms | p99 ms | server CPU us/req | "
          "client CPU | errors |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, proto, load, m in rows:
        print(f"| {name} | {proto} | {load} | {m['rps']:,.0f} | {m['p50']:.3f} | "
              f"{m['p99']:.3f} | {m['cpu_us']:.0f} | {m['client_cpu']:.2f} | {m['bad']:.0f} |")
    print(f"\nwork files: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
