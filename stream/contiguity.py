"""Hand a partition's records to the agents without holes: the decision, free of Kafka and Faust.

The raw and window-event topics have contiguous offsets (no compaction, no transactions), so
a record whose offset is past the next one expected means records were fetched and dropped
before they reached the agent. Faust's ``getmany`` does drop records the Kafka client already
returned, after the client's position has moved past them: those of a partition it counts as
paused (seen while a recovery seeks the partitions), and the rest of a batch when the consumer
generation changes in the middle of it (RELIABILITY.md, "Records dropped between fetch and
agent"). When later records come, Faust records the missing offsets as a "gap" and commits
over it: the documents are never scored, and the windows, which count each (ticker, raw
partition) up to a watermark of raw offsets, would take the missing events for re-deliveries
if they ever came.

So a record past a hole is refused and the partition is rewound to the first missing offset;
so is a partition whose fetched records were not all handed over by the end of the fetch
(the hole may be at the end of the log, where no later record would show it).
When the same hole comes back from the fetch that follows the rewind, the records are not in
the log (deleted by retention, or transaction markers written by someone else's producer):
the record is then accepted, with a warning, rather than stall the partition for good.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    DELIVER = "deliver"
    DROP = "drop"  # the rest of a batch already refused
    REWIND = "rewind"  # refuse, and seek the partition back to ``expected``
    SKIP_MISSING = "skip missing"  # deliver, though the records before it are not in the log


@dataclass
class Contiguity:
    """Per partition: the next offset expected, and the hole last rewound for."""

    _expected: dict[Hashable, int] = field(default_factory=dict, init=False)
    _rewound: dict[Hashable, tuple[int, int]] = field(default_factory=dict, init=False)  # partition → (owed, seen)
    _refused_in_batch: set[Hashable] = field(default_factory=set, init=False)

    def expected(self, tp: Hashable) -> int | None:
        return self._expected.get(tp)

    def new_batch(self) -> None:
        """A new fetch result begins: a partition refused in the last one is judged again."""
        self._refused_in_batch.clear()

    def sought(self, tp: Hashable, offset: int | None) -> None:
        """The partition was moved to ``offset``; ``None`` (no committed offset, or offset 0):
        its first record is wherever the log starts, so the first one is accepted."""
        self._refused_in_batch.discard(tp)
        if offset is None or offset <= 0:
            self._expected.pop(tp, None)
        else:
            self._expected[tp] = offset

    def all_sought(self, offsets: Mapping[Hashable, int | None]) -> None:
        """Every assigned partition was moved to its committed offset (after each rebalance):
        partitions not in ``offsets`` are no longer assigned."""
        self._expected.clear()
        self._rewound = {tp: hole for tp, hole in self._rewound.items() if tp in offsets}
        self._refused_in_batch.clear()
        for tp, offset in offsets.items():
            self.sought(tp, offset)

    def admit(self, tp: Hashable, offset: int) -> Verdict:
        expected = self._expected.get(tp)
        if tp in self._refused_in_batch:
            return Verdict.DROP
        if expected is None or offset == expected:
            self._delivered(tp, offset)
            return Verdict.DELIVER
        if offset < expected:
            # Behind the position (a record Faust itself discards as already read): pass it on
            # unchanged, and keep expecting the same offset.
            return Verdict.DELIVER
        if self._rewound.get(tp) == (expected, offset):
            self._delivered(tp, offset)
            return Verdict.SKIP_MISSING
        self._rewound[tp] = (expected, offset)
        self._refused_in_batch.add(tp)
        return Verdict.REWIND

    def stranded(self, fetched: Mapping[Hashable, tuple[int, int]]) -> dict[Hashable, int]:
        """After a fetch result was handed over, ``{partition: (first offset, last offset)}`` of
        what the client returned: the partitions whose records were not all delivered, with
        the offset to rewind to. Nothing later may reveal such a hole (the records were the
        last in the log), so it is found here, not by :meth:`admit`."""
        out: dict[Hashable, int] = {}
        for tp, (first, last) in fetched.items():
            if tp in self._refused_in_batch:
                continue  # already rewound
            expected = self._expected.get(tp)
            target = first if expected is None else expected
            if last >= target:
                out[tp] = target
        return out

    def _delivered(self, tp: Hashable, offset: int) -> None:
        self._expected[tp] = offset + 1
        self._rewound.pop(tp, None)
