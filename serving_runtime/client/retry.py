"""Bounded retry with exponential backoff and a capped Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` extra attempts after the first; delays grow from `backoff` to
    `max_backoff`. A server's Retry-After is honoured up to `max_retry_after` seconds so a
    confused server cannot park the trading engine for minutes."""

    retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0
    max_retry_after: float = 5.0

    def __post_init__(self) -> None:
        if self.retries < 0 or min(self.backoff, self.max_backoff, self.max_retry_after) < 0:
            raise ValueError(f"retry settings must not be negative: {self}")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 0)."""
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(hinted, self.max_retry_after)
        base = min(self.backoff * 2**attempt, self.max_backoff)
        # Full jitter: many engine threads retrying in lockstep would hit a recovering
        # pod at the same instant.
        return random.uniform(base / 2, base)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP date); None when absent or garbage."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
