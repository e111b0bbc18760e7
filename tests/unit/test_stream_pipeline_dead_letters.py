"""A batch's dead letters are sent by ``deliver``, again on every retry of it; what goes to the DLQ and
what holds the batch instead."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client import CollectorRegistry

from finsent.schemas import DeadLetter, RawDocument, utc_now
from finsent.settings import Settings
from model.scorer import ScorerUnavailable, to_sentiment
from stream.es_sink import Rejection
from stream.metrics import WorkerMetrics
from stream.model_holder import ModelHolder
from stream.pipeline import PROBE_TEXT, RawBatchPipeline, RawRecord
from stream.validation import Origin, message_overhead

FAUST_MAX_REQUEST_SIZE = 1_000_000  # faust's producer_max_request_size, which the worker keeps


def _arrived() -> asyncio.Future:
    delivered = asyncio.get_running_loop().create_future()
    delivered.set_result(None)
    return delivered


def _records(*values: bytes) -> list[RawRecord]:
    return [RawRecord(b"k", value, Origin("t.raw", 0, offset)) for offset, value in enumerate(values)]


def _doc(n: int, text: str | None = None, **fields) -> bytes:
    return RawDocument(id=f"d{n}", source="s", text=text or f"Profit rose {n}%.", ingested_at=utc_now(),
                       **fields).to_json()


class _Sink:
    """Elasticsearch that acknowledges every document but those whose id is in ``refuse`` (a mapping conflict)."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.indexed: list[str] = []
        self.refuse, self.sent = refuse, []

    async def index(self, index, items):
        self.sent.append(list(items))
        self.indexed += [item.id for item in items if item.id not in self.refuse]
        return [Rejection(item, 400, "document_parsing_exception: source_id") for item in items
                if item.id in self.refuse]


class _Model:
    """Scores every text, except those holding one of ``fails_on`` (or all, once broken)."""

    version = "v1"

    def __init__(self, fails_on: tuple[str, ...] = (), broken: bool = False) -> None:
        self.fails_on, self.broken, self.calls = fails_on, broken, []

    def score(self, texts):
        self.calls.append(list(texts))
        if self.broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if any(mark in text for text in texts for mark in self.fails_on):
            raise ValueError("the tokenizer choked")
        return [to_sentiment([0.1, 0.2, 0.7]) for _ in texts]


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
    # Counted once: when the broker confirmed it, not on each attempt.
    assert registry.get_sample_value("finsent_stream_dead_letters_total", {"stage": "validate"}) == 1.0


async def test_a_scorer_that_is_gone_holds_the_batch_and_blames_no_document():
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
    records = _records(*(_doc(i) for i in range(3)))
    try:
        with pytest.raises(ScorerUnavailable):
            await pipeline.score(records)  # no one-by-one fallback, which would dead-letter all three
        assert Flaky.calls == 1
        batch = await pipeline.score(records)  # what the worker's retry does
        assert batch.rejected == [] and [d.scored.sentiment.label for d in batch.docs] == ["positive"] * 3
    finally:
        holder.close()


@pytest.fixture
async def make():
    """Makes a pipeline whose broker confirms every message; ``sent`` collects them by topic."""
    holders: list[ModelHolder] = []

    async def make(model: _Model | None = None, settings: Settings | None = None,
                   **kwargs) -> tuple[RawBatchPipeline, CollectorRegistry, dict]:
        sent: dict[str, list] = {"dlq": [], "scored": [], "windows": []}

        def sender(topic):
            async def send(*args):
                sent[topic].append(args)
                return _arrived()
            return send

        registry = CollectorRegistry()
        holder = None
        if model is not None:
            holder = ModelHolder(lambda ref: model)
            holders.append(holder)
            await holder.load_initial("v1")
        pipeline = RawBatchPipeline(settings or Settings(), holder=holder, sink=_Sink(),
                                    metrics=WorkerMetrics(registry), send_dead_letter=sender("dlq"),
                                    send_scored=sender("scored"), send_window_event=sender("windows"), **kwargs)
        return pipeline, registry, sent

    yield make
    for holder in holders:
        holder.close()


async def test_a_record_dated_at_the_end_of_the_calendar_is_a_dead_letter_not_a_poison_window(make):
    now = datetime(2026, 12, 1, tzinfo=UTC)
    pipeline, _, _ = await make(clock=lambda: now)
    batch = await pipeline.score(_records(_doc(1, published_at=datetime(9999, 12, 31, 12, tzinfo=UTC)),
                                          _doc(2, published_at=datetime(2099, 1, 1, tzinfo=UTC))))
    assert [(r.origin.offset, stage) for r, stage, _ in batch.rejected] == [(0, "validate"), (1, "validate")]
    assert batch.rejected[0][2] == ("published_at: 9999-12-31T12:00:00+00:00 is more than 24 h after now "
                                    "(2026-12-01T00:00:00+00:00): a wrong date, not clock skew")


@pytest.mark.parametrize("value", [bytes([0xFF]) * 210_000,  # invalid UTF-8: 5 bytes each in the letter
                                   b'{"text":"' + b'\\"' * 260_000 + b'"}',  # escaped quotes: twice
                                   b"\x01" * 200_000])  # control characters: 6 times
async def test_a_dead_letter_is_cut_to_what_the_producer_can_send(make, value):
    pipeline, _, sent = await make(max_message_bytes=FAUST_MAX_REQUEST_SIZE)
    batch = await pipeline.score(_records(value))
    await pipeline.deliver(batch)
    [(key, letter)] = sent["dlq"]
    size = len(letter.to_json()) + message_overhead(key)
    assert FAUST_MAX_REQUEST_SIZE - 64 < size <= FAUST_MAX_REQUEST_SIZE  # as much of the record as fits
    assert letter.original_truncated and letter.original_bytes == len(value)
    assert value.decode("utf-8", errors="backslashreplace").startswith(letter.original)
    assert "over the limit" in letter.reason  # the reason is kept whole
    assert DeadLetter.model_validate(orjson.loads(letter.to_json())) == letter


async def test_a_small_dead_letter_keeps_the_whole_record(make):
    pipeline, _, sent = await make(max_message_bytes=FAUST_MAX_REQUEST_SIZE)
    await pipeline.deliver(await pipeline.score(_records(b"{not json")))
    [(key, letter)] = sent["dlq"]
    assert key == b"k" and letter.original == "{not json" and letter.original_bytes == 9
    assert not letter.original_truncated


async def test_a_document_whose_scored_message_is_too_big_to_produce_is_a_dead_letter(make):
    # FINSENT_MAX_TEXT_BYTES near the producer's limit: the sentiment and times tip the message over it.
    limit = 30_000
    pipeline, registry, sent = await make(_Model(), Settings(max_text_bytes=limit), max_message_bytes=limit)
    near = _doc(1, "x" * (limit - 400), tickers=["AAPL"])
    batch = await pipeline.score(_records(near, _doc(2, tickers=["AAPL"])))
    await pipeline.deliver(batch)
    assert pipeline.sink.indexed == ["d2"] and [doc.id for _, doc in sent["scored"]] == ["d2"]
    assert len(sent["windows"]) == 1
    [(_, letter)] = sent["dlq"]
    assert (letter.stage, letter.offset) == ("produce", 0) and "over the producer's largest message" in letter.reason
    assert len(letter.to_json()) + message_overhead(b"k") <= limit
    assert registry.get_sample_value("finsent_stream_dead_letters_total", {"stage": "produce"}) == 1.0


async def test_a_model_that_fails_on_every_text_holds_the_batch_instead_of_dead_lettering_it(make):
    model = _Model(broken=True)  # a sticky CUDA error, a broken ONNX session
    pipeline, _, _ = await make(model)
    records = _records(*(_doc(n) for n in range(8)))
    with pytest.raises(ScorerUnavailable, match="fails on a known-good text too"):
        await pipeline.score(records)
    assert model.calls[-1] == [PROBE_TEXT] and len(model.calls) == 2  # the batch, the probe: no halving
    model.broken = False  # the worker retries the batch until the model scores again
    batch = await pipeline.score(records)
    assert batch.rejected == [] and len(batch.docs) == 8


class _ProcessModel(_Model):
    """A model in a scorer process that a text holding BREAK leaves broken (a sticky CUDA error)
    until ``renew()`` starts a new process; ``renews_fix`` False: a new process is broken too."""

    def __init__(self, renews_fix: bool = True) -> None:
        super().__init__()
        self.renews_fix, self.renewals = renews_fix, 0

    def score(self, texts):
        if any("BREAK" in text for text in texts):
            self.broken = True
        return super().score(texts)

    def renew(self):
        self.renewals += 1
        self.broken = not self.renews_fix


async def test_a_text_that_leaves_the_scorer_process_broken_is_blamed_alone_and_the_rest_is_scored(make):
    model = _ProcessModel()
    pipeline, _, _ = await make(model)
    batch = await pipeline.score(_records(*(_doc(n, "BREAK the context" if n == 5 else None) for n in range(8))))
    # Text 4 failed after text 5 broke the process, within their half: scored again in a new process.
    [(record, stage, reason)] = batch.rejected
    assert record.origin.offset == 5 and stage == "score" and "CUDA error" in reason
    assert [d.raw.id for d in batch.docs] == ["d0", "d1", "d2", "d3", "d4", "d6", "d7"]
    assert not model.broken and model.renewals == 4  # after the batch, for text 4, and twice for text 5


async def test_a_model_that_a_new_scorer_process_does_not_mend_holds_the_batch(make):
    model = _ProcessModel(renews_fix=False)
    model.broken = True
    pipeline, _, _ = await make(model)
    with pytest.raises(ScorerUnavailable, match="fails on a known-good text too"):
        await pipeline.score(_records(*(_doc(n) for n in range(8))))
    assert model.renewals == 1 and model.calls[-2:] == [[PROBE_TEXT], [PROBE_TEXT]]  # before and after it


async def test_a_text_that_breaks_a_working_model_is_still_dead_lettered(make):
    model = _Model(fails_on=("POISON",))
    pipeline, _, _ = await make(model)
    batch = await pipeline.score(_records(*(_doc(n, "POISON pill" if n == 5 else None) for n in range(8))))
    [(record, stage, reason)] = batch.rejected
    assert record.origin.offset == 5 and stage == "score" and "the tokenizer choked" in reason
    assert [d.raw.id for d in batch.docs] == ["d0", "d1", "d2", "d3", "d4", "d6", "d7"]


async def test_indexed_documents_and_latency_are_counted_once_though_the_delivery_is_retried(make):
    pipeline, registry, _ = await make(_Model())
    failures = [RuntimeError("broker unreachable")]  # the first message fails to arrive

    async def send_scored(key, doc):
        if not failures:
            return _arrived()
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_exception(failures.pop())
        return delivered

    pipeline.send_scored = send_scored
    batch = await pipeline.score(_records(_doc(1), _doc(2)))
    with pytest.raises(RuntimeError, match="broker unreachable"):
        await pipeline.deliver(batch)
    assert registry.get_sample_value("finsent_stream_documents_indexed_total") == 0.0
    await pipeline.deliver(batch)
    assert registry.get_sample_value("finsent_stream_documents_indexed_total") == 2.0
    assert registry.get_sample_value("finsent_stream_end_to_end_latency_seconds_count") == 2.0


async def test_the_same_id_twice_in_a_batch_both_refused_dead_letters_both_records(make):
    # An ingest crash re-emitted the document: before, the second rejection raised KeyError and the
    # batch was retried for ever.
    pipeline, registry, sent = await make(_Model())
    pipeline.sink.refuse = ("d1",)
    batch = await pipeline.score(_records(_doc(1, tickers=["AAPL"]), _doc(1, tickers=["AAPL"])))
    await pipeline.deliver(batch)
    assert [[item.id for item in items] for items in pipeline.sink.sent] == [["d1"]]  # one bulk item per id
    assert [(letter.stage, letter.offset) for _, letter in sent["dlq"]] == [("index", 0), ("index", 1)]
    assert sent["scored"] == [] and sent["windows"] == []
    assert registry.get_sample_value("finsent_stream_dead_letters_total", {"stage": "index"}) == 2.0


async def test_the_same_id_twice_in_a_batch_indexes_the_last_copy_and_counts_it_once(make):
    pipeline, registry, sent = await make(_Model())
    records = _records(_doc(1, "Profit rose.", tickers=["AAPL"]), _doc(2, tickers=["AAPL"]),
                       _doc(1, "Profit rose again.", tickers=["AAPL"]))
    await pipeline.deliver(await pipeline.score(records))
    [items] = pipeline.sink.sent
    expected = [("d2", "Profit rose 2%."), ("d1", "Profit rose again.")]
    assert [(item.id, item.doc["text"]) for item in items] == expected
    assert [(doc.id, doc.text) for _, doc in sent["scored"]] == expected
    # Offsets rising, the last copy's: the windows count d1 once and drop neither.
    assert [(event.doc_id, event.raw_offset) for (event,) in sent["windows"]] == [("d2", 1), ("d1", 2)]
    assert sent["dlq"] == [] and registry.get_sample_value("finsent_stream_documents_indexed_total") == 2.0


async def test_a_refused_id_twice_in_a_batch_dead_letters_its_copies_and_delivers_the_rest(make):
    pipeline, _, sent = await make(_Model())
    pipeline.sink.refuse = ("d1",)
    batch = await pipeline.score(_records(_doc(1), _doc(2), _doc(1, "Profit rose again.")))
    await pipeline.deliver(batch)
    assert [(letter.stage, letter.offset) for _, letter in sent["dlq"]] == [("index", 0), ("index", 2)]
    assert [doc.id for _, doc in sent["scored"]] == ["d2"]
