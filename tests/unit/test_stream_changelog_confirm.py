"""Changelog writes are confirmed before a window batch is acknowledged; a refused write is sent
again and the confirmation fails until it is on the broker."""

import asyncio

import pytest

from stream.changelog_confirm import ChangelogConfirmations


def test_confirm_waits_for_every_tracked_write():
    async def scenario():
        loop = asyncio.get_running_loop()
        confirmations = ChangelogConfirmations()
        first, second = loop.create_future(), loop.create_future()
        confirmations.track(("p0", b"AAPL", b"s1"), first)
        confirmations.track(("p1", b"MSFT", b"s2"), second)
        waiting = asyncio.ensure_future(confirmations.confirm(lambda args: None))
        first.set_result("offset 7")
        await asyncio.sleep(0)
        assert not waiting.done()  # the second write is still in the producer's buffer
        second.set_result("offset 8")
        await waiting
        assert len(confirmations) == 0

    asyncio.run(scenario())


def test_a_refused_write_is_sent_again_and_the_confirmation_fails_until_it_lands():
    async def scenario():
        loop = asyncio.get_running_loop()
        confirmations = ChangelogConfirmations()
        sent_again: list[tuple] = []

        def send_again(args):
            sent_again.append(args)
            future = loop.create_future()
            confirmations.track(args, future)
            future.set_result("offset 9")

        refused, landed = loop.create_future(), loop.create_future()
        confirmations.track(("p0", b"AAPL", b"s1"), refused)
        confirmations.track(("p1", b"MSFT", b"s2"), landed)
        refused.set_exception(RuntimeError("NotLeaderForPartition"))
        landed.set_result("offset 8")
        with pytest.raises(RuntimeError, match="NotLeaderForPartition"):
            await confirmations.confirm(send_again)
        assert sent_again == [("p0", b"AAPL", b"s1")]  # only the refused write, same arguments
        await confirmations.confirm(send_again)  # the retry finds the re-sent write confirmed
        assert sent_again == [("p0", b"AAPL", b"s1")] and len(confirmations) == 0

    asyncio.run(scenario())
