"""Score ahead, deliver in order.

The raw agent hands each batch to a :class:`Lookahead` as soon as Faust yields it. The
batch's preparation (validate on the event loop, score in the inference thread) starts at
once, and one task delivers prepared batches (index, produce, acknowledge) strictly in the
order they came. So the inference thread has the next batch queued while the event loop
validates, indexes and produces; with one batch at a time it idled through every bulk
request and every validation (BENCHMARKS.md, "Scoring ahead of delivery").

Bounded: at most ``ahead`` batches wait behind the one being delivered, plus the one
whose :meth:`~Lookahead.submit` waits for room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

Prepared = TypeVar("Prepared")
Context = TypeVar("Context")


class Lookahead(Generic[Prepared, Context]):
    def __init__(self, deliver: Callable[[Prepared, Context], Awaitable[None]], ahead: int = 1) -> None:
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, not {ahead}")
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[asyncio.Task[Prepared], Context]] = asyncio.Queue(maxsize=ahead)
        self._waiting: list[asyncio.Task[Prepared]] = []  # started, not yet delivered
        self._runner: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Batches submitted and not yet delivered."""
        return len(self._waiting)

    async def submit(self, prepare: Coroutine[Any, Any, Prepared], context: Context) -> None:
        """Start ``prepare`` now; ``deliver(result, context)`` runs after every earlier delivery.
        Waits while ``ahead`` batches are queued; raises what a delivery raised."""
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run())
        if self._runner.done():
            prepare.close()  # never started
            self._raise_if_failed()
        task = asyncio.ensure_future(prepare)
        self._waiting.append(task)
        put = asyncio.ensure_future(self._queue.put((task, context)))
        try:
            await asyncio.wait([put, self._runner], return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()  # a no-op once it is done
        self._raise_if_failed()

    async def join(self) -> None:
        """Until everything submitted is delivered; raises what a delivery raised."""
        if self._runner is None:
            return
        joined = asyncio.ensure_future(self._queue.join())
        try:
            await asyncio.wait([joined, self._runner], return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
        self._raise_if_failed()

    async def cancel(self) -> None:
        """Stop everything: batches not delivered stay unacknowledged and come again."""
        tasks = [t for t in [self._runner, *self._waiting] if t is not None and not t.done()]
        self._runner, self._waiting = None, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _raise_if_failed(self) -> None:
        if self._runner is not None and self._runner.done():
            self._runner.result()  # the delivery's exception; a clean end cannot happen (_run loops)

    async def _run(self) -> None:
        while True:
            task, context = await self._queue.get()
            prepared = await task
            await self._deliver(prepared, context)
            self._waiting.remove(task)
            self._queue.task_done()
