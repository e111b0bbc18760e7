"""Durations as people write them in rules files and on the command line: ``90``, ``30s``, ``15m``, ``1h``, ``1d``."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# No finsent duration needs more than a century, and the bound keeps `now ± duration` far from
# datetime's year 1 and 9999 (timedelta itself overflows near 2.7 million years).
MAX_DURATION = timedelta(days=36_500)


def parse_duration(value: Any) -> timedelta:
    """``90`` / ``"90s"`` / ``"15m"`` / ``"1h"`` / ``"1d"`` → timedelta; ValueError beyond ``MAX_DURATION``."""
    if isinstance(value, timedelta):
        if value > MAX_DURATION:
            raise ValueError(f"{format_duration(value)} is longer than the longest duration allowed, "
                             f"{format_duration(MAX_DURATION)}")
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m, 1h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as 30s, 15m, 1h or a number of seconds")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{value!r} is longer than the longest duration allowed, {format_duration(MAX_DURATION)}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
