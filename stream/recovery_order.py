"""Faust's end of recovery, in an order that cannot drop records.

faust-streaming's ``Recovery`` ends every rebalance (``_resume_streams`` or
``on_recovery_completed``) with:

1. resume the stream partitions (flow control is already active: table recovery resumed it),
2. ``await consumer.perform_seek()`` (seek to the committed offsets),
3. ``app.flow_control.resume()``, which *clears every channel queue*.

Records fetched during step 2 are delivered into the queues and marked read, then thrown
away in step 3; no seek follows, so they are never fetched again and their offsets never
committed. A replacement worker that joins with a backlog (after a kill -9) hit that
window often enough to stall for good with part of the backlog unconsumed
(RELIABILITY.md, "Liveness and exactness of the stream worker").

Here the seek runs while the stream partitions are still paused, and the queues are cleared
before they are resumed, with no await in between: nothing of the new assignment is thrown
away from the queues after the seek. A fetch can still return records of those partitions
while they are being sought, and Faust's ``getmany`` skips them because it counts the
partitions as paused; :mod:`stream.gapless_consumer` fetches such records again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery


class OrderedRecovery(Recovery):
    """Both ways out of recovery (``_resume_streams`` without tables to restore,
    ``on_recovery_completed`` after restoring them) end in :meth:`_seek_then_resume`."""

    async def _resume_streams(self, generation_id: int = 0) -> None:
        await self.app.on_rebalance_complete.send()
        await self._seek_then_resume(generation_id)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                                        self.standbys_for_table[table]))
                     for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        await self._seek_then_resume(generation_id)

    async def _seek_then_resume(self, generation_id: int) -> None:
        app: Any = self.app
        consumer = app.consumer
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        assignment = consumer.assignment()
        if assignment:
            self.log.info("Seek stream partitions to committed offsets (still paused).")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
            if app.consumer_generation_id != generation_id:
                self.log.warning("Recovery rebalancing again")
                return
            consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        self.log.info("Resuming flow...")
        app.flow_control.resume()  # clears the queues: nothing of the stream partitions is in them yet
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class OrderedTableManager(TableManager):
    """Faust's table manager with :class:`OrderedRecovery` (``TableManager`` app setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = OrderedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
