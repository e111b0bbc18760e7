"""A batch's dead letters are sent by ``deliver``, again on every retry of it."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from finsent.settings import Settings
from stream.metrics import WorkerMetrics
from stream.pipeline import RawBatchPipeline, RawRecord
from stream.validation import Origin


async def test_a_failed_dead_letter_is_sent_again_when_the_delivery_is_retried():
    sent: list[tuple[bytes | None, str]] = []
    failures = [RuntimeError("broker unreachable")]  # the first send's delivery fails, later ones succeed

    async def send_dead_letter(key, letter):
        sent.append((key, letter.stage))
        delivered = asyncio.get_running_loop().create_future()
        if failures:
            delivered.set_exception(failures.pop())
        else:
            delivered.set_result(None)
        return delivered

    async def unused(*args):
        raise AssertionError("nothing valid to produce")

    registry = CollectorRegistry()
    pipeline = RawBatchPipeline(Settings(), holder=None, sink=None, metrics=WorkerMetrics(registry),
                                send_dead_letter=send_dead_letter, send_scored=unused, send_window_event=unused)
    records = [RawRecord(b"k", b"{not json", Origin("t.raw", 0, 7))]

    batch = await pipeline.score(records)  # validation fails: nothing is sent yet, the holder is not asked
    assert sent == [] and [(r.origin.offset, stage) for r, stage, _ in batch.rejected] == [(7, "validate")]
    with pytest.raises(RuntimeError, match="broker unreachable"):
        await pipeline.deliver(batch)
    await pipeline.deliver(batch)  # the retry sends the dead letter again, and this time it arrives
    assert sent == [(b"k", "validate"), (b"k", "validate")]
    assert registry.get_sample_value("finsent_stream_dead_letters_total", {"stage": "validate"}) == 2.0
