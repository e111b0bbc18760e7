import asyncio

import pytest

from stream.lookahead import Lookahead


async def test_batches_are_prepared_ahead_and_delivered_in_order():
    log: list[str] = []
    gates = {n: asyncio.Event() for n in range(3)}

    async def prepare(n: int) -> int:
        log.append(f"prepare {n}")
        await gates[n].wait()
        return n

    async def deliver(n: int, context: str) -> None:
        log.append(f"deliver {n} {context}")

    lookahead = Lookahead(deliver, ahead=1)
    await lookahead.submit(prepare(0), "events-0")  # taken by the delivery task, which awaits it
    await asyncio.sleep(0)
    await lookahead.submit(prepare(1), "events-1")  # queued
    third = asyncio.ensure_future(lookahead.submit(prepare(2), "events-2"))  # waits for room...
    await asyncio.sleep(0.01)
    # ...but all three started before any was delivered: the thread never waits for a delivery
    assert log == ["prepare 0", "prepare 1", "prepare 2"] and not third.done()
    gates[2].set()
    gates[1].set()
    await asyncio.sleep(0.01)
    assert log[3:] == []  # batch 0 is not prepared yet: nothing after it is delivered
    gates[0].set()
    await third
    await lookahead.join()
    assert log[3:] == ["deliver 0 events-0", "deliver 1 events-1", "deliver 2 events-2"]
    assert lookahead.pending == 0


async def test_submit_waits_while_the_queue_is_full():
    release = asyncio.Event()

    async def deliver(n: int, context: None) -> None:
        await release.wait()

    async def ready(n: int) -> int:
        return n

    lookahead = Lookahead(deliver, ahead=1)
    await lookahead.submit(ready(0), None)  # taken by the delivery task
    await asyncio.sleep(0)
    await lookahead.submit(ready(1), None)  # queued
    third = asyncio.ensure_future(lookahead.submit(ready(2), None))
    await asyncio.sleep(0.01)
    assert not third.done() and lookahead.pending == 3
    release.set()
    await third
    await lookahead.join()
    assert lookahead.pending == 0


async def test_a_failed_delivery_is_raised_to_the_submitter():
    async def deliver(n: int, context: None) -> None:
        await asyncio.sleep(0.01)
        raise ValueError(f"ack of batch {n} failed")

    async def ready(n: int) -> int:
        return n

    lookahead = Lookahead(deliver)
    await lookahead.submit(ready(7), None)
    with pytest.raises(ValueError, match="ack of batch 7 failed"):
        await lookahead.join()
    with pytest.raises(ValueError, match="ack of batch 7 failed"):
        await lookahead.submit(ready(8), None)
    await lookahead.cancel()


async def test_cancel_stops_preparation_and_delivery_before_any_ack():
    acked: list[int] = []

    async def slow(n: int) -> int:
        await asyncio.sleep(10)
        return n

    async def deliver(n: int, context: None) -> None:
        acked.append(n)

    lookahead = Lookahead(deliver)
    await lookahead.submit(slow(0), None)
    await lookahead.submit(slow(1), None)
    await lookahead.cancel()
    await asyncio.sleep(0)
    assert acked == [] and lookahead.pending == 0


def test_ahead_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Lookahead(lambda prepared, context: None, ahead=0)
