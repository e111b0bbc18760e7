"""The worker's periodic look at its partitions (an app timer): consumer lag, and stalls, rewound.

It must never raise: Faust turns an exception in a timer into a crash of the whole worker. Its broker
calls do fail: the end offsets time out after a broker outage of 90 s (every worker would exit
together), and a seek of a partition that has just moved to another worker is refused. A failed
look is logged (once a minute, finsent.log_repeats) and the next tick looks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from finsent.log_repeats import RepeatFilter
from stream.consumer_view import client_partition_states
from stream.task_dump import task_dump

log = logging.getLogger(__name__)


def lag_of(topic: str, ends: Mapping[Any, int | None], committed: Mapping[Any, int | None]) -> dict[int, int]:
    """Records past the committed offset, per partition of ``topic``: what the group has yet to finish,
    growing while it cannot (Elasticsearch away, a batch retried)."""
    return {tp.partition: max(0, end - (committed.get(tp) or 0))
            for tp, end in ends.items() if tp.topic == topic and end is not None}


class PartitionWatch:
    """One look per :meth:`tick` at the raw and window-event partitions the worker owns."""

    def __init__(self, app: Any, runtime: Any, raw_topic: str, window_topic: str,
                 clock: Callable[[], float] = monotonic) -> None:
        self.app = app
        self.runtime = runtime
        self.raw_topic = raw_topic
        self.window_topic = window_topic
        self.clock = clock
        self._repeats = RepeatFilter(prefixes=(__name__,), clock=clock)  # a broker outage fails every tick

    async def tick(self) -> None:
        try:
            await self._look()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - see the module's docstring
            self._failed("partition watch failed, looking again at the next tick: %s: %s", type(exc).__name__, exc)

    async def _look(self) -> None:
        app, runtime = self.app, self.runtime
        consumer = app.consumer
        tps = sorted(tp for tp in consumer.assignment() if tp.topic in (self.raw_topic, self.window_topic))
        ends = await consumer.highwaters(*tps) if tps else {}
        committed = {tp: consumer._committed_offset.get(tp) for tp in tps}  # Faust's own view
        runtime.metrics.set_lag(lag_of(self.raw_topic, ends, committed))  # also while nothing is delivered
        behind = {tp: max(0, (ends.get(tp) or 0) - (committed[tp] or 0)) for tp in tps}
        excused = app.rebalancing or app.in_recovery or not runtime.es_ok or runtime.failing is not None
        stuck = runtime.stall.observe(self.clock(), {tp: (committed[tp], behind[tp]) for tp in tps}, excused)
        if stuck:
            await self._rewind(consumer, stuck, ends, committed, tps)
        runtime.metrics.stalled.set(1 if runtime.stall.stalled else 0)

    async def _rewind(self, consumer: Any, stuck: set, ends: Mapping[Any, int | None],
                      committed: Mapping[Any, int | None], tps: list) -> None:
        state = {str(tp): {"end": ends.get(tp), "committed": committed[tp],
                           "read": consumer._read_offset.get(tp), "owed": consumer.contiguity.expected(tp),
                           "paused": tp in consumer._paused_partitions}
                 for tp in tps}
        log.warning("stalled: %s have records waiting and nothing committed for %.0f s; flow active %s, "
                    "%d unacked; %s; Kafka client: %s; rewinding to the committed offsets\n%s",
                    sorted(map(str, stuck)), self.runtime.stall.after_s, consumer.flow_active,
                    len(consumer.unacked), state, client_partition_states(consumer, stuck), task_dump())
        # Fetch the stuck partitions again from their committed offsets (safe: at-least-once).
        consumer.resume_partitions(stuck)
        await consumer.perform_seek()
        # A partition the group never committed has nothing to seek back to: start it over
        # from its first record (offset 0; out of range resets to the earliest, as configured).
        for tp in sorted(tp for tp in stuck if committed[tp] is None):
            try:
                await consumer.seek(tp, 0)
            except Exception as exc:  # noqa: BLE001 - moved to another worker since: its owner fetches it
                self._failed("could not rewind %s: %s: %s", tp, type(exc).__name__, exc)
        self.runtime.metrics.rewinds.inc()

    def _failed(self, template: str, *args: Any) -> None:
        """A warning, but the same one at most once a minute."""
        record = log.makeRecord(log.name, logging.WARNING, __file__, 0, template, args, None)
        if log.isEnabledFor(logging.WARNING) and self._repeats.filter(record):
            log.handle(record)
