"""`python -m mlmodel_operator`: run the operator against the current kubeconfig
(or the in-cluster service account), with OPERATOR_* settings or flags."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Sequence

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from . import handlers, metrics
from .apply import Kube
from .health import StandbyHealth
from .leader import LeaderElector
from .names import API_VERSION, GROUP, OPERATOR_HEALTH_PATH, PLURAL, VERSION
from .settings import OperatorSettings, load_settings

log = logging.getLogger("mlmodel_operator")

LOST_EXIT_SECONDS = 10.0


def _kube_client() -> Kube:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return Kube(client.ApiClient())


def _elect(settings: OperatorSettings, kube: Kube) -> LeaderElector:
    """Wait for the Lease (serving /healthz meanwhile: a standby is healthy), then keep it
    renewed in a thread; writes are fenced on it from here on."""
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    kube.instance = identity
    elector = LeaderElector(kube, settings.lease_namespace(), settings.leader_election_lease,
                            identity, settings.timings())
    kube.may_write = elector.may_write
    metrics.LEADER.set(0)
    health = StandbyHealth(settings.health_port) if settings.health_port else None
    log.info("leader election: %s waits for Lease %s/%s", identity, elector.namespace,
             elector.name)
    try:
        elector.acquire(threading.Event())
    finally:
        if health is not None:
            health.close()  # kopf's own liveness endpoint takes the port over
    metrics.LEADER.set(1)
    return elector


def run(settings: OperatorSettings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level.lower() != "debug":
        # kopf logs every child watch event's handler at INFO; our own log lines say what
        # was actually changed, so keep kopf's per-object chatter for debug runs.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kube = _kube_client()
    if not kube.has_resource(API_VERSION, PLURAL):
        # Without the CRD there is nothing to watch; exiting lets the pod restart until the
        # chart (or kubectl apply -f crds/) has installed it.
        log.error(
            "the %s/%s %s resource is not served: install crds/ first", GROUP, VERSION, PLURAL
        )
        raise SystemExit(1)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    elector = _elect(settings, kube) if settings.leader_election else None
    if elector is None:
        metrics.LEADER.set(1)  # the only replica: it always reconciles
    stop = threading.Event()  # the Lease keeper's
    lost = threading.Event()
    keeper: threading.Thread | None = None
    if elector is not None:

        def on_lost() -> None:
            metrics.LEADER.set(0)
            lost.set()
            # kopf stops as on SIGTERM; the fence already refuses every write. (A stop_flag
            # would do too, but kopf waits for it in an executor thread that its own
            # shutdown joins: a SIGTERM then hung until the flag was set.)
            os.kill(os.getpid(), signal.SIGTERM)
            # A kopf that does not wind down in time must not linger as a zombie leader.
            exit_timer = threading.Timer(LOST_EXIT_SECONDS, os._exit, args=(1,))
            exit_timer.daemon = True
            exit_timer.start()

        keeper = threading.Thread(target=elector.keep, args=(stop, on_lost), name="lease",
                                  daemon=True)
        keeper.start()
    namespaces = settings.namespace_list()
    log.info(
        "starting: %s, runtime image %s, %s",
        f"namespaces {namespaces}" if namespaces else "cluster-wide",
        settings.runtime_image,
        f"leader {kube.instance}" if elector else "no leader election (one replica only)",
    )
    try:
        kopf.run(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,  # one replica reconciles: the Lease decides which, not peering
            # Settings and the Kube client reach the handlers through kopf's memo.
            memo=handlers.operator_memo(settings, kube),
            liveness_endpoint=(
                f"http://0.0.0.0:{settings.health_port}{OPERATOR_HEALTH_PATH}"
                if settings.health_port
                else None
            ),
        )
    finally:
        stop.set()
        if keeper is not None:
            keeper.join(timeout=5)  # a renewal in flight must not land after the release
        if elector is not None and not lost.is_set():
            elector.release()
    if lost.is_set():
        log.error("lost the leader Lease: exiting so that a restart stands by again")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(load_settings(argv))


if __name__ == "__main__":
    sys.exit(main())
