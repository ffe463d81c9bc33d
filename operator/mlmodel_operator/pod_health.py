"""Read the runtime pods' own /health (the challenger's state is only known inside them).

Plain HTTP to each pod's IP on the runtime port, a short timeout, a bounded body, one pod
after the other: the operator asks only for MLModels with a canary or a shadow, and only
the ready pods of the current template.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request
from typing import Any

from .names import HEALTH_PATH, RUNTIME_PORT

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
MAX_BODY_BYTES = 1024 * 1024


def _unverified() -> ssl.SSLContext:
    # The certificate names the Service, not the pod IP asked here, and the operator has no
    # access to the Secret's CA: it reads a state document and sends nothing secret.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_health(pod_ip: str, *, port: int = RUNTIME_PORT, scheme: str = "http",
                timeout: float = TIMEOUT_SECONDS) -> Any:
    """The pod's /health JSON (a not-ready pod answers 503 with the same document), or
    None when it does not answer with one. `scheme` https: the runtime serves TLS."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    req = urllib.request.Request(f"{scheme}://{host}:{port}{HEALTH_PATH}",
                                 headers={"Accept": "application/json"})
    context = _unverified() if scheme == "https" else None
    try:
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310
                raw = resp.read(MAX_BODY_BYTES)
        except urllib.error.HTTPError as exc:  # 503: not ready, still a document
            raw = exc.read(MAX_BODY_BYTES)
        return json.loads(raw)
    except (OSError, ValueError) as exc:
        log.info("no /health from %s: %s", pod_ip, exc)
        return None
