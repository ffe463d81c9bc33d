"""Read series out of a Prometheus text exposition (a runtime's or a pod's /metrics)."""

from __future__ import annotations

import re

_LABEL = re.compile(r'(\w+)="([^"]*)"')


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the labelled series `name{...}` whose labels include `labels` (0 when
    none is there)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(_LABEL.findall(line[len(name):line.index("}") + 1]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
