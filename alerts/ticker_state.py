"""What the alert engine remembers of one ticker, apart from its rules: the trailing windows behind a
z-score, the confident negatives a burst is counted from, and the latest documents an alert shows.

Pure data structures, no I/O and no clock: :mod:`alerts.engine` feeds them and decides.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from finsent.schemas import Aggregate, AlertDocument, ScoredDocument

# How far behind the newest negative of a (rule, ticker) an older one may arrive and still count
# towards a burst: feeds list newest first, and scored documents come from several partitions.
BURST_LATENESS = timedelta(hours=24)
HISTORY_WINDOWS = 48  # closed windows each (ticker, window) series keeps for its baseline


@dataclass
class WindowSeries:
    """Final values of past windows of one (ticker, window), plus the window now filling."""

    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_WINDOWS))
    closed: int = 0  # windows closed since the engine started (the history keeps the last 48)
    current_start: datetime | None = None
    current: tuple[float, int] | None = None

    def observe(self, agg: Aggregate) -> None:
        if self.current_start is None or agg.window_start > self.current_start:
            if self.current is not None:
                self.history.append(self.current)  # the previous window is closed
                self.closed += 1
            self.current_start = agg.window_start
            self.current = (agg.mean_score, agg.count)
        elif agg.window_start == self.current_start:
            self.current = (agg.mean_score, agg.count)
        # an update to an older window: too late to change the baseline

    def stats(self, index: int) -> tuple[float | None, float | None, int]:
        """(mean, standard deviation, n) of the closed windows' values (0: mean score, 1: count)."""
        values = [item[index] for item in self.history]
        if not values:
            return None, None, 0
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return mean, math.sqrt(var), len(values)


def event_time(doc: ScoredDocument) -> datetime:
    return doc.published_at or doc.ingested_at


def densest_span(times: list[datetime], at: datetime, within: timedelta) -> tuple[int, int]:
    """``(i, j)``: the most times of the sorted ``times`` that lie within ``within`` of each other
    with ``at`` among them, as the slice ``times[i:j]`` (earliest such span on a tie)."""
    lo = bisect.bisect_left(times, at - within)
    hi = bisect.bisect_right(times, at + within)
    best, j = (lo, lo), lo
    for i in range(lo, hi):
        if times[i] > at:
            break  # a span starting after `at` does not hold it
        j = max(j, i)
        while j < hi and times[j] - times[i] <= within:
            j += 1
        if times[j - 1] >= at and j - i > best[1] - best[0]:
            best = (i, j)
    return best


@dataclass
class Burst:
    """Confident negatives of one (rule, ticker), in event-time order whatever their arrival order."""

    times: list[datetime] = field(default_factory=list)
    docs: list[AlertDocument] = field(default_factory=list)  # in the order of `times`; no text to hold
    newest: datetime | None = None

    def add(self, doc: ScoredDocument) -> datetime | None:
        """Keep ``doc``; returns its event time, or None for a repeat or one too late to count."""
        at = event_time(doc)
        if any(d.id == doc.id for d in self.docs[bisect.bisect_left(self.times, at):
                                                  bisect.bisect_right(self.times, at)]):
            return None  # redelivered: counts once
        if self.newest is not None and at < self.newest - BURST_LATENESS:
            return None
        index = bisect.bisect_right(self.times, at)
        self.times.insert(index, at)
        self.docs.insert(index, as_alert_doc(doc))
        self.newest = max(self.newest or at, at)
        return at

    def prune(self, within: timedelta, keep: int) -> None:
        """Forget what no late arrival can join to a burst any more, and beyond ``keep`` the oldest."""
        cut = bisect.bisect_left(self.times, self.newest - within - BURST_LATENESS)
        cut = max(cut, len(self.times) - keep)
        if cut > 0:
            del self.times[:cut], self.docs[:cut]

    def take(self, i: int, j: int) -> list[AlertDocument]:
        """Remove and return a burst's documents: they raise no second alert."""
        taken = self.docs[i:j]
        del self.times[i:j], self.docs[i:j]
        return taken


class KeptDocument(NamedTuple):
    """What an alert shows of a document (no text), and the times that place it in windows."""

    id: str
    title: str | None
    url: str | None
    score: float
    times: tuple[datetime, ...]  # published, ingested, scored: a window holds it by any of them


class RecentDocs:
    """A ticker's latest documents for an alert's top documents, at most ``limit`` and none older than
    the cut-off :meth:`prune` is given (in arrival order, which is near enough event order for that)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.docs: deque[KeptDocument] = deque()
        self.ids: set[str] = set()

    def add(self, doc: ScoredDocument) -> None:
        if doc.id in self.ids:
            return  # redelivered
        times = tuple(t for t in (doc.published_at, doc.ingested_at, doc.scored_at) if t is not None)
        self.docs.append(KeptDocument(doc.id, doc.title, doc.url, doc.sentiment.score, times))
        self.ids.add(doc.id)

    def prune(self, oldest: datetime | None) -> None:
        """Drop beyond ``limit`` the first kept, and from the front those whose every time is before ``oldest``."""
        while self.docs and (len(self.docs) > self.limit
                             or (oldest is not None and max(self.docs[0].times) < oldest)):
            self.ids.discard(self.docs.popleft().id)

    def within(self, start: datetime, end: datetime) -> list[KeptDocument]:
        return [d for d in self.docs if any(start <= t < end for t in d.times)]


def as_alert_doc(doc: ScoredDocument) -> AlertDocument:
    return AlertDocument(id=doc.id, title=doc.title, url=doc.url, score=doc.sentiment.score)
