"""The drain after SIGTERM (server/uvicorn_server.py) must not end while a client is still
sending. A client told `Connection: close` reconnects after every answer, so the server
has no connection open for a moment between two requests; ending the drain at such a
moment closes the listening socket and that client's next connection is refused — a
failed request although the drain period is far from over."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.raw_http import PREDICT, RawConn, small_models
from tests.support.runtime_helpers import RuntimeServer

DRAIN = 8.0
SENDING = 4.0  # seconds after SIGTERM the client keeps sending (the Service still routes)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_models(tmp_path_factory.mktemp("drain-busy") / "models")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_drain_lasts_while_a_reconnecting_client_sends(start_server, models_dir: Path,
                                                       workers: int) -> None:
    srv: RuntimeServer = start_server(models_dir, env={"DRAIN_SECONDS": str(DRAIN)},
                                      args=["--workers", str(workers)])
    srv.wait_ready()
    srv.client.close()
    sigterm_at = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    in_a_row = 0  # draining: readiness 503 on 5 new connections (any worker) in a row
    while in_a_row < 5:
        assert time.monotonic() - sigterm_at < 5, "readiness still 200 after SIGTERM"
        conn = RawConn(srv.port)
        in_a_row = in_a_row + 1 if conn.request("GET", "/v2/health/ready")[0] == 503 else 0
        conn.close()
    answered, failures = 0, []
    while time.monotonic() - sigterm_at < SENDING and answered < 20_000:
        try:
            conn = RawConn(srv.port)
            status, headers, _ = conn.request("POST", "/predict", PREDICT)
            conn.wait_closed(5)
            conn.close()
            if status != 200 or headers.get("connection") != "close":
                failures.append((status, headers))
            answered += 1
        except OSError as exc:
            failures.append(f"{time.monotonic() - sigterm_at:.2f} s after SIGTERM: {exc!r}")
            time.sleep(0.05)
    rc = srv.proc.wait(DRAIN + 10)
    print(f"\nworkers={workers}: answered {answered}, failed {len(failures)}, "
          f"exit {rc} {time.monotonic() - sigterm_at:.1f} s after SIGTERM")
    assert not failures, failures[:3]
    assert rc == 0, srv.logs()[-2000:]
