"""Liveness of the worker: "records are waiting on my partitions, yet nothing is consumed".

A worker can be up, healthy towards Kafka and Elasticsearch, and still not consume (a
consumer stuck after a rebalance, a blocked agent). Nothing is lost then (offsets stay
uncommitted) but nothing is scored either, so the worker reports itself stalled: a
warning with its consumer state, the ``finsent_stream_stalled`` gauge and ``/health``
answering 503, which is what a supervisor's liveness probe restarts on.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StallDetector:
    """Pure decision over periodic observations (no clock, no I/O)."""

    after_s: float
    _progress_at: float | None = field(default=None, init=False)
    _progress: float = field(default=-1.0, init=False)
    stalled: bool = field(default=False, init=False)

    def observe(self, now: float, progress: float, waiting: int, excused: bool) -> bool:
        """``progress``: any count that grows while the worker works (records consumed plus
        committed offsets); ``waiting``: records past the committed
        offsets of the assigned partitions; ``excused``: a reason not to consume that is
        reported elsewhere (a rebalance, Elasticsearch away, a batch being retried).
        Returns whether the worker is stalled now."""
        if progress != self._progress or waiting <= 0 or excused or self._progress_at is None:
            self._progress = progress
            self._progress_at = now
            self.stalled = False
        else:
            self.stalled = now - self._progress_at >= self.after_s
        return self.stalled
