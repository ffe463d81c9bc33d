"""CPU an idle runtime uses (what a CPU autoscaling target sees when nobody calls).

    .venv/bin/python bench/idle_cpu.py [--seconds 20]

Trains the demo's two small models, starts `python -m serving_runtime` on them (the server
a pod runs, hot path included), waits until it is ready, then reads the process tree's CPU
time over the interval (after 20 requests: a pod's idle follows its busy time) and prints
millicores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PORT = 18777


def _cpu_seconds(pid: int) -> float:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for p in [pid, *map(int, children)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    from serving_runtime.tools.demo import train

    models = Path(tempfile.mkdtemp(prefix="n1v1-idle-"))
    bodies = train(models)
    env = {**os.environ, "MODELS_DIR": str(models), "HOST": "127.0.0.1", "PORT": str(PORT),
           "WORKERS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "serving_runtime"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        for _ in range(20):  # some traffic first, as a pod's idle follows its busy time
            req = urllib.request.Request(f"http://127.0.0.1:{PORT}/predict",
                                         data=json.dumps(bodies["iris"]).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
        time.sleep(3)  # start-up and request work done
        c0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.seconds)
        used = _cpu_seconds(proc.pid) - c0
        print(f"idle runtime: {1000 * used / (time.monotonic() - t0):.1f} millicores "
              f"over {args.seconds:.0f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
