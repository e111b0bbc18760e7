"""The pipeline around one batch: bad documents, failed batches and Kafka's answers, per document."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from finsent.schemas import RawDocument
from finsent.settings import load_settings
from ingest.dedup import DedupIndex
from ingest.items import FetchResult, SourceItem
from ingest.metrics import IngestMetrics
from ingest.normalise import Normaliser
from ingest.pipeline import Pipeline
from ingest.producer import Delivery, refusal
from ingest.runner import poll_once
from ingest.sources.base import Source
from ingest.tickers import TickerDictionary, TickerExtractor

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


class Sink:
    """Stands in for KafkaSink (the real one is tested against Kafka in tests/integration): these
    tests are about what the pipeline does with each answer."""

    topic = "test.raw"

    def __init__(self) -> None:
        self.error: Exception | None = None  # raised by send, as a bug would be
        self.too_large: set[str] = set()  # source ids the broker refuses
        self.gate: threading.Event | None = None  # when set up, send waits for it: Kafka is slow to answer
        self.entered = threading.Event()
        self.sent: list[RawDocument] = []

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, docs: list[RawDocument]) -> Delivery:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(60)
        if self.error is not None:
            raise self.error
        delivery = Delivery()
        for doc in docs:
            if doc.source_id in self.too_large:
                delivery.add(doc, MessageSizeTooLargeError("the message is too large"))
            else:
                delivery.acked.append(doc)
                self.sent.append(doc)
        return delivery


@contextlib.contextmanager
def started_pipeline(state: Path):
    """A pipeline with its dedup index in ``state`` and a :class:`Sink` for Kafka."""
    normaliser = Normaliser(TickerExtractor(TickerDictionary.load()), clock=lambda: NOW)
    pipe = Pipeline(load_settings(), metrics=IngestMetrics(CollectorRegistry()), sink=Sink(), normaliser=normaliser,
                    dedup=DedupIndex(state / "dedup.sqlite3", clock=lambda: NOW))
    pipe.start()
    try:
        yield pipe
    finally:
        if pipe.sink.gate is not None:
            pipe.sink.gate.set()
        pipe.close()


@pytest.fixture
def pipeline(tmp_path: Path):
    with started_pipeline(tmp_path) as pipe:
        yield pipe


def story(source_id: str, **fields) -> SourceItem:
    return SourceItem(**({"source": "rss:x", "text": f"Acme shares rise, story {source_id}", "source_id": source_id,
                          "where": f"feed entry {source_id}"} | fields))


def test_a_bad_document_is_rejected_with_its_place_and_the_batch_goes_on(pipeline: Pipeline) -> None:
    long_url = "https://x.com/?q=" + "é" * 1000  # over 4,096 characters once percent-encoded
    report = pipeline.process("rss:x", [story("1"), story("2", url=long_url), story("3")])
    assert report.produced == 2 and [(r.code, r.where) for r in report.rejected] == [("url_too_long", "feed entry 2")]
    assert pipeline.process("rss:x", [story("1")]).duplicates == 1  # produced, so remembered


def test_a_failed_batch_leaves_nothing_staged(pipeline: Pipeline) -> None:
    pipeline.sink.error = RuntimeError("a bug in the sink")
    with pytest.raises(RuntimeError):
        pipeline.process("rss:x", [story("1")])
    pipeline.sink.error = None
    report = pipeline.process("rss:x", [story("1")])  # never reached Kafka: not a duplicate
    assert (report.produced, report.duplicates) == (1, 0)


def test_a_document_kafka_refuses_is_its_rejection_not_a_failed_batch(pipeline: Pipeline) -> None:
    delivered = []
    pipeline.sink.too_large = {"2"}
    batch = FetchResult(items=[story("1"), story("2")], on_delivered=lambda: delivered.append(True))
    report = pipeline.process("rss:x", batch)
    assert report.produced == 1 and report.delivered and delivered == [True]  # the source's cursor moves on
    assert [(r.code, r.where) for r in report.rejected] == [("too_large", "feed entry 2")]
    assert pipeline.metrics.value("finsent_ingest_errors_total", stage="invalid", reason="too_large") == 1


def test_which_kafka_errors_refuse_a_document_for_good() -> None:
    assert refusal(MessageSizeTooLargeError()) == "too_large"
    assert refusal(KafkaTimeoutError()) is None  # no broker now: the batch is retried, nothing dropped


class Boom(Source):
    async def fetch(self) -> FetchResult:
        raise ValueError("a bug in this source")


class One(Source):
    async def fetch(self) -> FetchResult:
        return FetchResult(items=[story("1")])


async def test_once_a_source_that_fails_unexpectedly_is_reported_and_the_others_run(pipeline: Pipeline) -> None:
    said = []
    report, errors = await poll_once([Boom(None, name="boom", interval=1), One(None, name="one", interval=1)],
                                     pipeline, lambda source, why: said.append(f"{source.name}: {why}"))
    assert (report.produced, errors) == (1, 1)
    assert said[0].startswith("boom: unexpected error: ValueError: a bug in this source")
    assert pipeline.metrics.value("finsent_ingest_errors_total", source="boom", reason="unexpected") == 1


def test_live_blog_entries_whose_links_differ_by_fragment_are_two_documents(pipeline: Pipeline) -> None:
    page = "https://news.example.com/markets/live?utm_source=rss"
    report = pipeline.process("rss:x", [story("post-1", url=f"{page}#post-1"), story("post-2", url=f"{page}#post-2")])
    assert report.produced == 2 and report.duplicates == 0
    assert [d.url for d in report.documents] == [f"https://news.example.com/markets/live#post-{n}" for n in (1, 2)]
    again = pipeline.process("rss:y", [story("elsewhere", url=f"{page}#post-1")])  # the same link in another feed
    assert again.duplicates == 1 and pipeline.metrics.value("finsent_ingest_duplicates_total", kind="url") == 1
