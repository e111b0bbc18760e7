"""Window size specs (``FINSENT_WINDOWS``, alert rules): ``"15m"`` → 900 seconds.

Pure and import-light, so the settings can validate ``FINSENT_WINDOWS`` with the very parser the worker and
the alert engine use, without importing the stream package.
"""

from __future__ import annotations

import re

from finsent.durations import UNIT_SECONDS

_SPEC = re.compile(r"^(\d+)([smhd])$")


def parse_window(spec: str) -> int:
    """``"15m"`` → 900 (seconds). Raises ValueError naming the bad spec."""
    match = _SPEC.match(spec.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"window {spec!r} is not <positive integer><s|m|h|d>")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def parse_windows(specs: str) -> dict[str, int]:
    """``"1m,15m"`` → ``{"1m": 60, "15m": 900}`` (order kept, duplicates refused)."""
    out: dict[str, int] = {}
    for spec in (s.strip() for s in specs.split(",") if s.strip()):
        if spec in out:
            raise ValueError(f"window {spec!r} is listed twice")
        size = parse_window(spec)
        # Two names of one size would keep the same windows twice, and alert twice on them.
        same = next((name for name, seconds in out.items() if seconds == size), None)
        if same is not None:
            raise ValueError(f"windows {same!r} and {spec!r} are the same size")
        out[spec] = size
    if not out:
        raise ValueError("no window sizes given")
    return out
