"""Jittered exponential backoff for failing sources, honouring a server's Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 86_400.0  # a server asking for more than a day is misconfigured


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class Backoff:
    """``base · 2^(n-1)`` capped at ``cap``, with "equal jitter" (half fixed, half random) so
    many sources failing together do not retry in lockstep."""

    def __init__(self, base: float = 5.0, cap: float = 900.0, rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def failure(self, retry_after: float | None = None) -> float:
        """Record one failure; the seconds to wait before the next try."""
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
        delay = delay / 2 + self.rng() * delay / 2
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def success(self) -> None:
        self.failures = 0
