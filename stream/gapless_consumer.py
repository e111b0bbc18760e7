"""Faust's aiokafka consumer with :class:`~stream.contiguity.Contiguity` in front of the agents.

Only the topics named in ``guarded_topics`` are judged (the worker's raw and window-event
topics); table changelogs and anything else pass as Faust hands them over.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import ensure_TP
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

from stream.contiguity import Contiguity, Verdict

log = logging.getLogger(__name__)


class GaplessConsumer(AIOKafkaConsumer):
    guarded_topics: frozenset[str] = frozenset()  # set by the app before the consumer starts
    on_rewind: Any = None  # called with the topic name on every rewind (a metric)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contiguity = Contiguity()
        self._skipped_unacked: Counter = Counter()
        self._fetched: dict[Any, tuple[int, int]] = {}  # what the client returned for the current batch

    async def _wait_next_records(self, timeout: float) -> Any:
        records, active = await super()._wait_next_records(timeout)
        self._fetched = {tp: (batch[0].offset, batch[-1].offset) for tp, batch in (records or {}).items()
                         if batch and tp.topic in self.guarded_topics}
        return records, active

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        self.contiguity.new_batch()
        self._fetched = {}
        async for tp, message in super().getmany(timeout):
            if tp.topic not in self.guarded_topics:
                yield tp, message
                continue
            expected = self.contiguity.expected(tp)
            verdict = self.contiguity.admit(tp, message.offset)
            if verdict is Verdict.DELIVER:
                yield tp, message
            elif verdict is Verdict.REWIND:
                log.warning("%s: offset %d arrived where %d was expected; records between were fetched "
                            "but never handed over: rewinding to %d", tp, message.offset, expected, expected)
                # Not self.seek: the rest of this batch stays refused, and the hole is
                # remembered to tell a second sight of it (records not in the log) from the first.
                await self._rewind(tp, expected)
            elif verdict is Verdict.SKIP_MISSING:
                log.warning("%s: offsets %d to %d are not in the log (retention or transaction markers); "
                            "going on from %d", tp, expected, message.offset - 1, message.offset)
                yield tp, message
            # Verdict.DROP: the rest of a batch already refused; the rewind fetches it again.
        # Faust's getmany stops handing over a fetch when the generation changes or the flow
        # stops, and skips records of a partition it no longer counts as active.
        if self.should_stop:
            return
        for tp, offset in self.contiguity.stranded(self._fetched).items():
            log.warning("%s: fetched records from offset %d on were never handed over: rewinding to %d",
                        tp, offset, offset)
            await self._rewind(tp, offset)
            self.contiguity.sought(tp, offset)

    async def _rewind(self, tp: Any, offset: int) -> None:
        try:
            await super().seek(tp, offset)
        except IllegalStateError:  # revoked meanwhile: its next owner starts from the committed offset
            return
        if self.on_rewind is not None:
            self.on_rewind(tp.topic)

    def ack(self, message: Any) -> bool:
        # A stream skips a record it reads during a rebalance (flow stopped, or an older consumer
        # generation) and acks it unprocessed, also in our noack streams. Such a record was never
        # tracked; acking it would let the commit pass a record no agent handled. Left unacked,
        # it is fetched again from the committed offset that ends the rebalance.
        if message.topic in self.guarded_topics and not message.tracked:
            self._skipped_unacked[message.tp] += 1
            return False
        return super().ack(message)

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        self.contiguity.sought(ensure_TP(partition), offset)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        offsets = await super().seek_to_committed()
        for tp, n in sorted(self._skipped_unacked.items()):
            log.info("%s: %d records skipped by a stream during the rebalance were not acked; "
                     "fetched again from offset %s", tp, n, offsets.get(tp))
        self._skipped_unacked.clear()
        self.contiguity.all_sought({ensure_TP(tp): offset for tp, offset in offsets.items()})
        return offsets
