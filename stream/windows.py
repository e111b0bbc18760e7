"""Per-ticker tumbling-window maths, free of Kafka and Faust.

A :class:`TickerWindows` holds, for one ticker, every configured window size: the most
recent ``baseline + 1`` windows of each size (enough to compare the newest window with
its trailing baseline) and, per raw-topic partition, the highest raw offset already
counted. The worker re-delivers raw records after a crash (at-least-once); comparing the
raw offset with that watermark makes counting idempotent, so replays never double-count.

State round-trips through plain JSON-able dicts (``to_state``/``from_state``), which is
what the Faust table and its changelog store. ``from_state`` ignores keys and trailing figures it
does not know, so a worker reads the state a newer release's worker wrote (rolling upgrade, rollback).

Statistics of a window: count, counts per label, mean score, confidence-weighted mean
score. Z-scores compare the window with the ``baseline`` windows just before it:

* ``volume_z``: (count − mean of baseline counts) / sample stdev of baseline counts, where
  a baseline slot without documents counts as volume 0 (slots before the ticker's first
  window, or older than the windows kept, are not part of the baseline: a late event's
  window has a shorter one);
* ``sentiment_z``: (mean score − mean of baseline means) / sample stdev of baseline means,
  over baseline windows that had documents.

Either is ``None`` with fewer than ``min_baseline`` baseline values or a zero stdev (at most
``MIN_SPREAD``: rounding).

An event dated after now (plus a tolerance for clock skew) is kept out (:func:`refusal`): its
window would become the newest, and every real event after it would count as late until that
date. So is one whose window would start or end outside the calendar ``datetime`` can hold.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from finsent.schemas import LABELS, Aggregate


@dataclass(frozen=True)
class WindowEvent:
    """One scored document's contribution to one ticker's windows."""

    ticker: str
    doc_id: str
    at: datetime  # event time (published_at, else ingested_at)
    label: str
    score: float
    confidence: float
    raw_partition: int
    raw_offset: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ticker": self.ticker, "doc_id": self.doc_id, "at": self.at.isoformat(),
            "label": self.label, "score": self.score, "confidence": self.confidence,
            "raw_partition": self.raw_partition, "raw_offset": self.raw_offset,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> WindowEvent:
        """Raises ValueError, KeyError or TypeError, naming what is wrong."""
        at = datetime.fromisoformat(obj["at"])
        if at.tzinfo is None:
            raise ValueError("window event time has no time zone")
        try:
            at = at.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"window event time {obj['at']!r} is out of range in UTC") from None
        if obj["label"] not in LABELS:
            raise ValueError(f"unknown label {obj['label']!r}")
        score, confidence = float(obj["score"]), float(obj["confidence"])
        # A NaN (float("nan") of a string) would poison the window's sums, and its aggregate fail for good.
        if not (math.isfinite(score) and -1.0 <= score <= 1.0 and math.isfinite(confidence) and
                0.0 <= confidence <= 1.0):
            raise ValueError(f"score {score} or confidence {confidence} out of range")
        return cls(
            ticker=str(obj["ticker"]), doc_id=str(obj["doc_id"]), at=at,
            label=obj["label"], score=score, confidence=confidence,
            raw_partition=int(obj["raw_partition"]), raw_offset=int(obj["raw_offset"]),
        )


@dataclass
class WindowStats:
    count: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    score_sum: float = 0.0
    weighted_sum: float = 0.0  # Σ confidence·score
    confidence_sum: float = 0.0

    def add(self, label: str, score: float, confidence: float) -> None:
        self.count += 1
        self.counts[label] += 1
        self.score_sum += score
        self.weighted_sum += confidence * score
        self.confidence_sum += confidence

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.count if self.count else 0.0

    @property
    def weighted_mean_score(self) -> float:
        # All-zero confidences carry no weight information: fall back to the plain mean.
        return self.weighted_sum / self.confidence_sum if self.confidence_sum > 0 else self.mean_score

    def to_state(self) -> list[Any]:
        return [self.count, [self.counts[label] for label in LABELS], self.score_sum,
                self.weighted_sum, self.confidence_sum]

    @classmethod
    def from_state(cls, state: list[Any]) -> WindowStats:
        # Figures a newer release appends are ignored: workers of two releases share the state during a rolling
        # upgrade (a partition moves between them), and a rollback restores what the newer one wrote.
        count, counts, score_sum, weighted_sum, confidence_sum = state[:5]
        return cls(int(count), dict(zip(LABELS, (int(c) for c in counts), strict=True)),
                   float(score_sum), float(weighted_sum), float(confidence_sum))


def window_bounds(start: int, size: int) -> tuple[datetime, datetime] | None:
    """(start, end) of the window that starts at ``start`` (epoch s), or None where ``datetime`` cannot hold them
    (years 1 to 9999)."""
    try:
        begin = datetime.fromtimestamp(start, UTC)
        return begin, begin + timedelta(seconds=size)
    except (OverflowError, ValueError, OSError):
        return None


def refusal(event: WindowEvent, sizes: dict[str, int], now: datetime, tolerance: timedelta) -> str | None:
    """Why ``event`` must stay out of the windows, or None: ``future`` (dated after ``now`` + ``tolerance``),
    ``out_of_range`` (a window of it would start or end outside the calendar)."""
    if event.at - now > tolerance:  # a difference, not now + tolerance: never out of range itself
        return "future"
    if any(window_bounds(_start_of(event.at, size), size) is None for size in sizes.values()):
        return "out_of_range"
    return None


def _start_of(at: datetime, size: int) -> int:
    ts = int(at.timestamp())
    return ts - ts % size


# A baseline spread at most this is float rounding of equal values (means of one repeated score differ in the 17th
# digit), not variation: a z-score against it reads 1e16. The alert engine's own z-score ignores the same spread.
MIN_SPREAD = 1e-12


def _z(value: float, baseline: list[float], min_baseline: int) -> float | None:
    if len(baseline) < max(2, min_baseline):
        return None
    spread = statistics.stdev(baseline)
    if spread <= MIN_SPREAD:
        return None
    return (value - statistics.fmean(baseline)) / spread


def _clamp(value: float) -> float:
    # Float sums can stray a hair outside [-1, 1]; the schema is strict about the range.
    return max(-1.0, min(1.0, value))


@dataclass
class WindowSeries:
    """The recent windows of one size for one ticker."""

    size: int  # seconds
    keep: int  # windows kept: baseline + 1
    windows: dict[int, WindowStats] = field(default_factory=dict)  # start (epoch s) → stats
    first_start: int | None = None

    def start_of(self, at: datetime) -> int:
        return _start_of(at, self.size)

    def add(self, event: WindowEvent) -> int | None:
        """Count the event; returns its window start, or None when it is too late to keep (or its window
        is outside the calendar: its aggregate could not be written)."""
        start = self.start_of(event.at)
        if window_bounds(start, self.size) is None:
            return None
        if self.windows and start not in self.windows:
            newest = max(self.windows)
            if start <= newest - self.keep * self.size:
                return None  # older than every window we still keep
        self.windows.setdefault(start, WindowStats()).add(event.label, event.score, event.confidence)
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        return start

    def forget_after(self, start: float) -> None:
        """Forget windows that start after ``start``: an event :func:`refusal` now keeps out put them there
        (state written before it did), and they would make every real event late."""
        for future in [s for s in self.windows if s > start]:
            del self.windows[future]
        if self.first_start is not None and self.first_start > start:
            self.first_start = min(self.windows, default=None)

    def prune(self) -> None:
        """Forget windows that no longer belong to the newest window's baseline. Separate from
        :meth:`add`, so a batch that spans many windows still reports each changed window
        against its full baseline before the old ones go."""
        if self.windows:
            newest = max(self.windows)
            for old in [s for s in self.windows if s <= newest - self.keep * self.size]:
                del self.windows[old]
            # A slot before those kept is unknown now, not empty: a late event's baseline stops there.
            oldest_kept = newest - (self.keep - 1) * self.size
            self.first_start = oldest_kept if self.first_start is None else max(self.first_start, oldest_kept)

    def baseline(self, start: int) -> tuple[list[float], list[float]]:
        """(counts, means) of the ``keep - 1`` window slots before ``start``, none before ``first_start``
        (the ticker's first window, or the oldest one :meth:`prune` kept)."""
        counts: list[float] = []
        means: list[float] = []
        for k in range(1, self.keep):
            slot = start - k * self.size
            if self.first_start is None or slot < self.first_start:
                break
            stats = self.windows.get(slot)
            counts.append(float(stats.count) if stats else 0.0)
            if stats and stats.count:
                means.append(stats.mean_score)
        return counts, means

    def to_state(self) -> dict[str, Any]:
        return {"first": self.first_start, "w": {str(s): st.to_state() for s, st in self.windows.items()}}

    @classmethod
    def from_state(cls, size: int, keep: int, state: dict[str, Any]) -> WindowSeries:
        windows = {int(s): WindowStats.from_state(st) for s, st in state.get("w", {}).items()}
        return cls(size=size, keep=keep, windows=windows, first_start=state.get("first"))


class TickerWindows:
    """All window sizes of one ticker, plus the replay watermarks."""

    def __init__(self, ticker: str, sizes: dict[str, int], baseline: int = 24, min_baseline: int = 3) -> None:
        if baseline < 1:
            raise ValueError("baseline must be at least 1 window")
        self.ticker = ticker
        self.sizes = dict(sizes)
        self.baseline = baseline
        self.min_baseline = min_baseline
        self.series = {name: WindowSeries(size, baseline + 1) for name, size in self.sizes.items()}
        self.watermarks: dict[int, int] = {}  # raw partition → highest raw offset counted

    def counted(self, event: WindowEvent) -> bool:
        """Whether the event is a re-delivery of one already counted."""
        seen = self.watermarks.get(event.raw_partition)
        return seen is not None and event.raw_offset <= seen

    @property
    def version(self) -> int:
        """Grows with every event counted, never falls: the Elasticsearch version of the ticker's aggregates
        (stream.aggregator), so that one computed from older state cannot overwrite a newer one. The sum of the
        watermarks, each plus one: at least the events counted, and kept when windows are forgotten or pruned,
        where a window's own count would start again from nothing. A ticker's events come in one order (one
        partition), so equal versions of a window come from the same events."""
        return sum(offset + 1 for offset in self.watermarks.values())

    def add(self, event: WindowEvent) -> list[tuple[str, int]] | None:
        """Count one event once; returns the (window name, start) pairs it changed (fewer
        than the sizes when it is too late for some), or None for a re-delivery."""
        if self.counted(event):
            return None  # a re-delivery of something already counted
        self.watermarks[event.raw_partition] = event.raw_offset
        touched = []
        for name, series in self.series.items():
            start = series.add(event)
            if start is not None:
                touched.append((name, start))
        return touched

    def prune(self) -> None:
        for series in self.series.values():
            series.prune()

    def forget_after(self, start: float) -> None:
        """Forget every window that starts after ``start`` (epoch s; see :meth:`WindowSeries.forget_after`)."""
        for series in self.series.values():
            series.forget_after(start)

    def aggregate(self, name: str, start: int, now: datetime) -> Aggregate:
        series = self.series[name]
        stats = series.windows[start]
        counts, means = series.baseline(start)
        begin, end = window_bounds(start, series.size)  # add() keeps no window outside the calendar
        return Aggregate(
            ticker=self.ticker,
            window=name,
            window_start=begin,
            window_end=end,
            count=stats.count,
            counts=dict(stats.counts),
            mean_score=_clamp(stats.mean_score),
            weighted_mean_score=_clamp(stats.weighted_mean_score),
            sentiment_z=_z(stats.mean_score, means, self.min_baseline) if stats.count else None,
            volume_z=_z(float(stats.count), counts, self.min_baseline),
            updated_at=now,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "series": {name: s.to_state() for name, s in self.series.items()},
            "watermarks": {str(p): o for p, o in self.watermarks.items()},
        }

    @classmethod
    def from_state(cls, ticker: str, sizes: dict[str, int], state: dict[str, Any] | None,
                   baseline: int = 24, min_baseline: int = 3) -> TickerWindows:
        tw = cls(ticker, sizes, baseline, min_baseline)
        if state:
            for name, series_state in state.get("series", {}).items():
                if name in tw.series:  # a window size dropped from the settings is forgotten
                    tw.series[name] = WindowSeries.from_state(tw.sizes[name], baseline + 1, series_state)
            tw.watermarks = {int(p): int(o) for p, o in state.get("watermarks", {}).items()}
        return tw


def aggregate_id(agg: Aggregate) -> str:
    """Elasticsearch id of an aggregate: ``ticker|window|window_start``, the start written as
    in the aggregate's JSON (ISO 8601, ``Z``), so the id can be rebuilt from the document."""
    start = agg.window_start.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return f"{agg.ticker}|{agg.window}|{start}"
