"""Liveness of the worker: "records are waiting on this partition, yet none is consumed".

A worker can be up, healthy towards Kafka and Elasticsearch, and still not consume a
partition (one the consumer stopped fetching after a rebalance, records dropped between
fetch and agent). Nothing is lost then (offsets stay uncommitted) but nothing is scored or
counted either. The worker then reports itself stalled (a warning with its consumer state,
the ``finsent_stream_stalled`` gauge, ``/health`` answering 503) and rewinds to the committed
offsets, which at-least-once processing makes safe: a record handled twice overwrites its
own document, and the windows skip what they already counted.

Each partition is judged on its own: a busy partition must not hide a stuck one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field


@dataclass
class _Partition:
    committed: int | None
    since: float
    acted_at: float | None = None


@dataclass
class StallDetector:
    """Pure decision over periodic observations (no clock, no I/O)."""

    after_s: float
    _parts: dict[Hashable, _Partition] = field(default_factory=dict, init=False)
    stalled: frozenset = field(default=frozenset(), init=False)

    def observe(self, now: float, partitions: Mapping[Hashable, tuple[int | None, int]], excused: bool) -> set:
        """Take one observation of every assigned partition, ``{key: (committed offset, records
        past it)}``; return the partitions to act on (report and rewind): stalled for
        ``after_s``, then again every ``after_s`` while they stay so.

        ``excused``: a reason not to consume that is reported elsewhere (a rebalance or
        recovery, Elasticsearch away, a batch being retried); it restarts every clock.
        """
        act, stalled = set(), set()
        for key in list(self._parts):
            if key not in partitions:
                del self._parts[key]  # revoked
        for key, (committed, behind) in partitions.items():
            part = self._parts.get(key)
            if part is None or part.committed != committed or behind <= 0 or excused:
                self._parts[key] = _Partition(committed, now)
                continue
            if now - part.since < self.after_s:
                continue
            stalled.add(key)
            if part.acted_at is None or now - part.acted_at >= self.after_s:
                part.acted_at = now
                act.add(key)
        self.stalled = frozenset(stalled)
        return act
