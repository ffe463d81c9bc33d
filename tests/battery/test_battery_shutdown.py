"""Battery: SIGTERM while kept-alive clients keep sending (1 and 2 workers).

What Kubernetes does when it deletes a pod: SIGTERM (after the preStop sleep), while pooled
clients still hold keep-alive connections and the Service may route new ones for a moment.
Every request sent must be answered (200; during the drain with `Connection: close`, after
which the server closes and the client reconnects), the connections left idle must end
with a FIN (not a reset), and the process must exit 0. Raw sockets, so a reset, an EOF
before the answer and the Connection header are each counted.

Two shapes of client: pools that keep idle connections open across the drain (the drain
then lasts DRAIN_SECONDS and ends by closing them), and clients with no idle connection
that reconnect after each answer with a little think time (the server then sees moments
with no connection open while requests keep coming).

Prints `shutdown workers=N: sent S, ok O, failed F, connection-close C, exit E`.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.raw_http import PREDICT, RawConn, small_models
from tests.support.runtime_helpers import RuntimeServer

MARGIN = 6.0  # start of the shutdown, process exit, a loaded shared machine


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_models(tmp_path_factory.mktemp("battery-shutdown") / "models")


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    close: int = 0  # answers carrying Connection: close
    resets: int = 0
    errors: list[str] = field(default_factory=list)
    idle: list[RawConn] = field(default_factory=list)  # left open when the load stopped

    def fail(self, why: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(why)


def _client(port: int, stop: threading.Event, tally: Tally, lock: threading.Lock,
            limit: int, think_s: float) -> None:
    """Requests on one keep-alive connection until `stop`, `think_s` at most between two;
    reconnects after each `Connection: close` (the server then closes); leaves its last
    connection idle."""
    rng = random.Random(threading.get_ident())
    sent = ok = close = resets = 0
    errors: list[str] = []
    conn: RawConn | None = None
    while not stop.is_set() and sent < limit:
        sent += 1  # an attempt: a refused connection is a request that failed
        try:
            if conn is None:
                conn = RawConn(port)
            status, headers, _ = conn.request("POST", "/predict", PREDICT)
        except ConnectionResetError as exc:
            resets += 1
            errors.append(f"reset: {exc!r}")
            conn = None
            continue
        except OSError as exc:  # refused, EOF before the answer, timeout
            errors.append(repr(exc))
            conn = None
            continue
        if status != 200:
            errors.append(f"status {status}")
        else:
            ok += 1
        if headers.get("connection") == "close":
            close += 1
            how = conn.wait_closed(5)
            if how != "eof":
                errors.append(f"after Connection: close the connection was {how}")
            conn.close()
            conn = None
        if think_s:
            time.sleep(rng.uniform(0, think_s))
    with lock:
        tally.sent += sent
        tally.ok += ok
        tally.close += close
        tally.resets += resets
        for e in errors:
            tally.fail(e)
        if conn is not None:
            tally.idle.append(conn)


def _readiness_fails(port: int, timeout: float) -> float:
    """Seconds until readiness answered 503 on 5 new connections in a row (with workers,
    each connection may land on any of them)."""
    start = time.monotonic()
    in_a_row = 0
    while in_a_row < 5:
        assert time.monotonic() - start < timeout, "readiness still 200 after SIGTERM"
        c = RawConn(port)
        try:
            status, _, _ = c.request("GET", "/v2/health/ready")
        finally:
            c.close()
        in_a_row = in_a_row + 1 if status == 503 else 0
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("idle_pool", [True, False], ids=["idle-pool", "no-idle-pool"])
def test_sigterm_under_keepalive_load(models_dir: Path, tmp_path: Path, soak: bool,
                                      workers: int, idle_pool: bool) -> None:
    drain = 12.0 if soak else 4.0
    before = 5.0 if soak else 1.0  # load before the SIGTERM
    routed_for = drain / 2  # after it: the Service still routes here this long
    clients = 16 if soak else 6
    limit = 200_000 if soak else 20_000  # requests per client, a bound besides the time
    srv = RuntimeServer(models_dir, env={"DRAIN_SECONDS": str(drain)},
                        args=["--workers", str(workers)], log_path=tmp_path / "server.log")
    try:
        srv.wait_ready()
        srv.client.close()  # only this test's connections stay open
        port = srv.port
        tally, lock, stop = Tally(), threading.Lock(), threading.Event()
        think_s = 0.0 if idle_pool else 0.01
        threads = [threading.Thread(target=_client,
                                    args=(port, stop, tally, lock, limit, think_s))
                   for _ in range(clients)]
        for t in threads:
            t.start()
        time.sleep(before)
        # pooled connections that are idle at the SIGTERM and send once during the drain,
        # and ones that stay idle until the server closes them (drain end, or uvicorn's 5 s
        # keep-alive timeout: either with a FIN)
        sleepers = [RawConn(port) for _ in range(4)]
        holders = [RawConn(port) for _ in range(4 if idle_pool else 0)]
        for c in sleepers + holders:
            assert c.request("GET", "/v2/health/live")[0] == 200
        sigterm_at = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        not_ready_after = _readiness_fails(port, timeout=3)

        time.sleep(max(0.0, 1.0 - (time.monotonic() - sigterm_at)))
        sleeper_failures = []
        for c in sleepers:
            try:
                status, headers, _ = c.request("POST", "/predict", PREDICT)
                how = c.wait_closed(5)
                if status != 200 or headers.get("connection") != "close" or how != "eof":
                    sleeper_failures.append((status, headers.get("connection"), how))
            except OSError as exc:
                sleeper_failures.append(repr(exc))
            c.close()

        time.sleep(max(0.0, routed_for - (time.monotonic() - sigterm_at)))
        stop.set()  # endpoints removed: the clients send elsewhere, their pools stay open
        for t in threads:
            t.join(30)
        idle = holders + tally.idle
        idle_ends = [c.wait_closed(drain + MARGIN) for c in idle]
        for c in idle:
            c.close()
        rc = srv.proc.wait(drain + 2 * MARGIN)
        took = time.monotonic() - sigterm_at
    finally:
        logs = srv.logs()
        srv.stop()

    sent = tally.sent + len(sleepers)
    ok = tally.ok + len(sleepers) - len(sleeper_failures)
    failed = tally.failed + len(sleeper_failures)
    shape = "idle pool" if idle_pool else "no idle pool"
    print(f"\nshutdown workers={workers}: sent {sent}, ok {ok}, failed {failed}, "
          f"connection-close {tally.close + len(sleepers)}, exit {rc} "
          f"({shape}; resets {tally.resets}; idle connections at the end: "
          f"{idle_ends.count('eof')} FIN, {idle_ends.count('reset')} reset, "
          f"{idle_ends.count('open')} left open; not ready after {not_ready_after:.2f} s, "
          f"exited {took:.1f} s after SIGTERM, drain {drain} s)")
    assert failed == 0, (tally.errors, sleeper_failures, logs[-2000:])
    assert rc == 0, logs[-3000:]
    assert idle_ends.count("eof") == len(idle_ends), idle_ends
    assert tally.close >= clients, "clients were not told to reconnect during the drain"
