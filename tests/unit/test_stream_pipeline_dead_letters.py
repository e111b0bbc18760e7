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


async def test_a_scorer_that_is_gone_holds_the_batch_and_blames_no_document():
    from finsent.schemas import RawDocument, utc_now
    from model.scorer import ScorerUnavailable, to_sentiment
    from stream.model_holder import ModelHolder

    class Flaky:  # a scorer process that died once: the first call fails, the next one scores
        version = "v1"
        calls = 0

        def score(self, texts):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ScorerUnavailable("the scorer process of model v1 exited while scoring (exit code -9)")
            return [to_sentiment([0.1, 0.2, 0.7]) for _ in texts]

    async def refuse(*args):
        raise AssertionError("nothing is sent while scoring")

    holder = ModelHolder(lambda ref: Flaky())
    await holder.load_initial("v1")
    pipeline = RawBatchPipeline(Settings(), holder=holder, sink=None, metrics=WorkerMetrics(CollectorRegistry()),
                                send_dead_letter=refuse, send_scored=refuse, send_window_event=refuse)
    docs = [RawDocument(id=f"d{i}", source="s", text=f"Profit rose {i}%.", ingested_at=utc_now()) for i in range(3)]
    records = [RawRecord(b"k", d.model_dump_json().encode(), Origin("t.raw", 0, i)) for i, d in enumerate(docs)]
    try:
        with pytest.raises(ScorerUnavailable):
            await pipeline.score(records)  # no one-by-one fallback, which would dead-letter all three
        assert Flaky.calls == 1
        batch = await pipeline.score(records)  # what the worker's retry does
        assert batch.rejected == [] and [d.scored.sentiment.label for d in batch.docs] == ["positive"] * 3
    finally:
        holder.close()
