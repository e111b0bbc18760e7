"""How far ``finsent labels index --once`` got, and whether it should go on: no I/O, for the indexer's drain.

The end of a drain is the end offsets the topic's partitions had when it began, reached when the consumer group's
committed offsets are there: whichever member of the group read them. Empty polls say nothing: a group still forming
hands out no partition, and kafka-python's poll returns nothing while Kafka is away.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple


class DrainTarget(NamedTuple):
    """The topic's partitions at the start of a drain: their end offsets (the offset the next record gets) and first
    offsets (where a group that never committed begins, as auto_offset_reset is earliest)."""

    ends: Mapping[Any, int]
    beginnings: Mapping[Any, int]

    def left(self, committed: Mapping[Any, int | None]) -> int:
        """Records between the group's committed offsets and the ends; ``None``: the group never committed there. A
        partition committed past its end (records produced since the start) has none left."""
        return sum(max(0, end - self._start_of(partition, committed.get(partition)))
                   for partition, end in self.ends.items())

    def _start_of(self, partition: Any, committed: int | None) -> int:
        # Records before the first offset are gone (retention): a group committed there goes on from the first.
        beginning = self.beginnings.get(partition, 0)
        return beginning if committed is None else max(committed, beginning)


class Drained(NamedTuple):
    """What a drain read, and what it left: ``left`` records between the group's committed offsets and the end
    (``None``: it never learned the end), ``at_start`` of them when it began; ``error``: its last failure."""

    records: int
    left: int | None
    at_start: int | None = None
    error: str | None = None

    @property
    def to_the_end(self) -> bool:
        return self.left == 0


class DrainProgress:
    """The clock of a drain: it stalls once ``stall_s`` seconds went by without the records left falling (counted
    from its start until they first fall): Kafka or Elasticsearch away, or a group that hands this consumer nothing."""

    def __init__(self, stall_s: float, clock: Callable[[], float]) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self.records = 0
        self.left: int | None = None
        self.at_start: int | None = None
        self.error: str | None = None
        self._moved_at = clock()

    def read(self, records: int) -> None:
        """A poll went through, with or without records: what failed before has passed."""
        self.records += records
        self.error = None

    def saw(self, left: int) -> None:
        """The records left, as Kafka just told them."""
        if self.at_start is None:
            self.at_start = left
        elif left < self.left:
            self._moved_at = self.clock()
        self.left = left

    def failed(self, error: str) -> None:
        self.error = error

    def seconds_left(self) -> float:
        return max(0.0, self._moved_at + self.stall_s - self.clock())

    def stalled(self) -> bool:
        return self.seconds_left() == 0.0

    def drained(self) -> Drained:
        return Drained(self.records, self.left, self.at_start, self.error)
