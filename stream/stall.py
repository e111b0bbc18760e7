"""Liveness of the worker: "records are waiting on my partitions, yet nothing is consumed".

A worker can be up, healthy towards Kafka and Elasticsearch, and still not consume (a
partition that the consumer stopped fetching after a rebalance, records dropped between
fetch and agent). Nothing is lost then (offsets stay uncommitted) but nothing is scored
either. The worker then reports itself stalled (a warning with its consumer state, the
``finsent_stream_stalled`` gauge, ``/health`` answering 503) and rewinds its partitions to
the committed offsets, which at-least-once processing makes safe: a record handled twice
overwrites its own document, and the windows skip what they counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StallDetector:
    """Pure decision over periodic observations (no clock, no I/O)."""

    after_s: float
    _progress_at: float | None = field(default=None, init=False)
    _progress: float = field(default=-1.0, init=False)
    _acted_at: float | None = field(default=None, init=False)
    stalled: bool = field(default=False, init=False)

    def observe(self, now: float, progress: float, waiting: int, excused: bool) -> bool:
        """Take one observation; True when the worker should act (report and rewind): once
        it has been stalled for ``after_s``, then again every ``after_s`` while it stays so.

        ``progress``: any count that grows while the worker works (records consumed plus
        committed offsets); ``waiting``: records past the committed offsets of the assigned
        partitions; ``excused``: a reason not to consume that is reported elsewhere (a
        rebalance or recovery, Elasticsearch away, a batch being retried).
        """
        if progress != self._progress or waiting <= 0 or excused or self._progress_at is None:
            self._progress = progress
            self._progress_at = now
            self._acted_at = None
            self.stalled = False
            return False
        if now - self._progress_at < self.after_s:
            return False
        self.stalled = True
        if self._acted_at is None or now - self._acted_at >= self.after_s:
            self._acted_at = now
            return True
        return False
