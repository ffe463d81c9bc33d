"""`python -m mlmodel_operator`: run the operator against the current kubeconfig
(or the in-cluster service account), with OPERATOR_* settings or flags."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from . import handlers
from .apply import Kube
from .names import API_VERSION, GROUP, OPERATOR_HEALTH_PATH, PLURAL, VERSION
from .settings import OperatorSettings, load_settings

log = logging.getLogger("mlmodel_operator")


def _kube_client() -> Kube:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return Kube(client.ApiClient())


def run(settings: OperatorSettings) -> None:
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
    handlers.register_resync(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    namespaces = settings.namespace_list()
    log.info(
        "starting: %s, runtime image %s, %s",
        f"namespaces {namespaces}" if namespaces else "cluster-wide",
        settings.runtime_image,
        f"peering {settings.peering_name}" if settings.peering_name else "standalone",
    )
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=not settings.peering_name,
        peering_name=settings.peering_name or None,
        # Settings and the Kube client reach the handlers through kopf's memo.
        memo=handlers.operator_memo(settings, kube),
        liveness_endpoint=(
            f"http://0.0.0.0:{settings.health_port}{OPERATOR_HEALTH_PATH}"
            if settings.health_port
            else None
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    run(load_settings(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
