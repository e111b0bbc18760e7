"""Changelog writes confirmed before the events that caused them are acknowledged.

A Faust table sends each write to its changelog topic through the producer's buffer, in the
background, with nothing tying it to the offset commit of the events being processed. The
consumer could then commit a window batch's offsets while the batch's new window state was
still in the buffer; a kill -9 at that moment lost the state but not the commit, so the next
owner restored the older state, never saw the batch again, and every later aggregate of those
tickers was short by the batch's events (RELIABILITY.md, "Liveness and exactness of the stream
worker"). The windows agent therefore waits for :meth:`ChangelogConfirmations.confirm` before
acknowledging a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

SendAgain = Callable[[tuple[Any, ...]], Any]


class ChangelogConfirmations:
    """The changelog records sent and not yet confirmed by the broker, with what sent them."""

    def __init__(self) -> None:
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self._pending.append((args, future))

    async def confirm(self, send_again: SendAgain) -> None:
        """Wait until every tracked record is on the broker.

        A record the broker refused is sent again with the same arguments (through
        ``send_again``, which tracks the new send) and the first error is raised, so the caller
        retries the confirmation rather than acknowledging a batch whose state is not stored.
        There is one record per key and batch, so a re-sent record is never older than
        another record of its key.
        """
        pending, self._pending = self._pending, []
        failed: list[tuple[Any, ...]] = []
        error: BaseException | None = None
        for args, future in pending:
            try:
                await future
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the send is repeated below and the error raised
                failed.append(args)
                error = error or exc
        for args in failed:
            send_again(args)
        if error is not None:
            raise error
