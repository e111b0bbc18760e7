"""Pure statistics of the benchmarks: percentiles, drain rates, pacing. No I/O, no clocks."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default), so p50 of [1, 2] is 1.5 and p100 is the maximum."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/p99/max/mean of latencies in seconds."""
    if not seconds:
        raise ValueError("no latencies to summarise")
    return {
        "n": len(seconds),
        "p50_s": percentile(seconds, 50),
        "p95_s": percentile(seconds, 95),
        "p99_s": percentile(seconds, 99),
        "max_s": max(seconds),
        "mean_s": sum(seconds) / len(seconds),
    }


def latencies(pairs: Iterable[tuple[datetime, datetime]]) -> list[float]:
    """Seconds from each ``(ingested_at, indexed_at)`` pair; both must be timezone-aware."""
    out = []
    for ingested, indexed in pairs:
        if ingested.tzinfo is None or indexed.tzinfo is None:
            raise ValueError("latencies need timezone-aware datetimes")
        out.append((indexed - ingested).total_seconds())
    return out


def drain_rate(stamps: Sequence[datetime]) -> dict[str, float | int]:
    """Sustained docs/s from the ``indexed_at`` stamps of a drained backlog.

    The worker stamps a whole batch with one time, after scoring it. The first batch's
    stamp starts the clock (whatever came before it is start-up, not throughput); every
    later document was consumed, scored and stamped between the first and the last stamp.
    """
    if not stamps:
        raise ValueError("no indexed_at stamps")
    counts = Counter(stamps)
    first, last = min(counts), max(counts)
    span = (last - first).total_seconds()
    after_first = len(stamps) - counts[first]
    if span <= 0 or after_first == 0:
        raise ValueError(f"the backlog of {len(stamps)} docs was indexed in a single batch: "
                         "produce more docs than the worker's batch size")
    return {"docs_per_s": after_first / span, "docs": after_first, "seconds": span, "batches": len(counts)}


def rate(count: int, seconds: float) -> float:
    """``count / seconds``, refusing a non-positive span (a rate over no time is meaningless)."""
    if seconds <= 0:
        raise ValueError(f"rate over a non-positive span ({seconds} s)")
    return count / seconds


def send_offsets(count: int, per_second: float) -> list[float]:
    """When (seconds after the start) each of ``count`` paced sends is due."""
    if per_second <= 0:
        raise ValueError(f"pacing rate must be positive, got {per_second}")
    return [i / per_second for i in range(count)]


def ratio(measured: float | None, reference: float | None) -> float | None:
    """``measured / reference``, or None when either is unknown or the reference is zero."""
    if measured is None or reference is None or reference == 0:
        return None
    return measured / reference
