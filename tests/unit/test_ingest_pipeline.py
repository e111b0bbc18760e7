"""The pipeline around one batch: bad documents, failed batches and Kafka's answers, per document."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from finsent.schemas import RawDocument
from finsent.settings import load_settings
from ingest.backoff import Backoff
from ingest.cli import _summary
from ingest.dedup import DedupIndex
from ingest.items import FetchResult, SourceItem
from ingest.metrics import IngestMetrics
from ingest.normalise import Normaliser
from ingest.pipeline import Pipeline
from ingest.producer import Delivery, refusal
from ingest.runner import poll, poll_forever, poll_once
from ingest.sources.base import Source
from ingest.sources.http import FetchError, HttpFetcher
from ingest.sources.rss import RssSource
from ingest.sources.stocktwits import StockTwitsSource
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
def started_pipeline(state: Path, clock: Callable[[], datetime] = lambda: NOW):
    """A pipeline with its dedup index in ``state`` and a :class:`Sink` for Kafka."""
    normaliser = Normaliser(TickerExtractor(TickerDictionary.load()), clock=clock)
    pipe = Pipeline(load_settings(), metrics=IngestMetrics(CollectorRegistry()), sink=Sink(), normaliser=normaliser,
                    dedup=DedupIndex(state / "dedup.sqlite3", clock=clock))
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


def test_an_item_read_again_by_id_logs_at_debug_another_duplicate_at_info(pipeline: Pipeline, caplog) -> None:
    pipeline.process("rss:x", [story("1", url="https://x.com/a")])
    caplog.set_level("INFO", logger="ingest.pipeline")
    twin = story("2", url="https://x.com/a", text="Acme shares rise again")  # another id, the same link
    assert pipeline.process("rss:x", [story("1", url="https://x.com/a"), twin]).duplicates == 2
    kinds = [r.getMessage().split(": duplicate (")[1].split(",")[0] for r in caplog.records
             if ": duplicate (" in r.getMessage()]
    assert kinds == ["url"]  # a feed re-read each poll would log every item it keeps at INFO


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
    once = await poll_once([Boom(None, name="boom", interval=1), One(None, name="one", interval=1)],
                           pipeline, lambda source, why: said.append(f"{source.name}: {why}"))
    assert (once.total.produced, once.errors, once.not_polled) == (1, 1, [])
    assert said[0].startswith("boom: unexpected error: ValueError: a bug in this source")
    assert pipeline.metrics.value("finsent_ingest_errors_total", source="boom", reason="unexpected") == 1


class DownThenUp(Source):
    """Fails ``failures`` polls, then fetches once and stops the loop; records the failure gauge at each poll."""

    def __init__(self, pipeline: Pipeline, stop: asyncio.Event, failures: int) -> None:
        super().__init__(None, name="rss:down", interval=1)
        self.pipeline, self.stop, self.failures, self.seen = pipeline, stop, failures, []

    async def fetch(self) -> FetchResult:
        self.seen.append(self.pipeline.metrics.value("finsent_ingest_consecutive_fetch_failures", source=self.name))
        if len(self.seen) <= self.failures:
            raise FetchError("http_503", "down for maintenance") if len(self.seen) % 2 else ValueError("a bug")
        self.stop.set()
        return FetchResult()


async def test_a_source_down_for_good_shows_in_a_gauge_not_only_in_a_rate_of_errors(pipeline: Pipeline) -> None:
    # Backoff spaces its retries out to 15 minutes: the error rate of a source down for hours stays near zero.
    stop = asyncio.Event()
    source = DownThenUp(pipeline, stop, failures=4)
    await poll_forever(source, pipeline, stop, backoff=Backoff(base=0, cap=0))
    assert source.seen == [0, 1, 2, 3, 4]
    assert pipeline.metrics.value("finsent_ingest_consecutive_fetch_failures", source="rss:down") == 0


def test_live_blog_entries_whose_links_differ_by_fragment_are_two_documents(pipeline: Pipeline) -> None:
    page = "https://news.example.com/markets/live?utm_source=rss"
    report = pipeline.process("rss:x", [story("post-1", url=f"{page}#post-1"), story("post-2", url=f"{page}#post-2")])
    assert report.produced == 2 and report.duplicates == 0
    assert [d.url for d in report.documents] == [f"https://news.example.com/markets/live#post-{n}" for n in (1, 2)]
    again = pipeline.process("rss:y", [story("elsewhere", url=f"{page}#post-1")])  # the same link in another feed
    assert again.duplicates == 1 and pipeline.metrics.value("finsent_ingest_duplicates_total", kind="url") == 1


FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>IR</title>
<item><guid>41</guid><title>Acme declares a dividend</title><pubDate>Sat, 28 Nov 2026 11:00:00 GMT</pubDate></item>
<item><guid>42</guid><title>Acme raises its dividend</title><pubDate>Sat, 28 Nov 2026 12:05:00 GMT</pubDate></item>
</channel></rss>"""
STREAM = {"response": {"status": 200}, "messages": [
    {"id": 7, "body": "$ACME looks strong", "created_at": "2026-11-28T11:00:00Z"},
    {"id": 8, "body": "$ACME breaking out", "created_at": "2026-11-28T12:05:00Z"},
]}


@contextlib.asynccontextmanager
async def feed_server(asked: list[dict[str, str]], feed: dict[str, str] | None = None):
    """A real HTTP server on a free port: an RSS feed (``feed``'s body and etag) that honours If-None-Match,
    and a StockTwits stream; ``asked`` gets each request's conditional headers and query."""
    from aiohttp import web

    current = feed if feed is not None else {"body": FEED, "etag": '"v1"'}

    async def rss(request: web.Request) -> web.Response:
        asked.append({"if-none-match": request.headers.get("If-None-Match", "")})
        if request.headers.get("If-None-Match") == current["etag"]:
            return web.Response(status=304)
        return web.Response(body=current["body"].encode(), content_type="application/rss+xml",
                            headers={"ETag": current["etag"]})

    async def stream(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        return web.json_response(STREAM)

    app = web.Application()
    app.router.add_get("/rss.xml", rss)
    app.router.add_get("/streams/symbol/ACME.json", stream)
    async with serving(app) as served:
        yield served


@contextlib.asynccontextmanager
async def serving(app):
    """``app`` on a free loopback port, and a fetcher: yields (fetcher, base URL)."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http = HttpFetcher(timeout=5)
    try:
        yield http, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await http.close()
        await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = NOW - timedelta(minutes=10)  # 11:50: what is dated 12:05 is ahead of the clock

    def __call__(self) -> datetime:
        return self.now


async def test_a_feed_item_dated_ahead_is_fetched_again_once_its_time_comes(tmp_path: Path) -> None:
    clock, asked = Clock(), []
    async with feed_server(asked) as (http, base):
        source = RssSource(http, f"{base}/rss.xml")
        with started_pipeline(tmp_path, clock) as pipe:
            first = await poll(source, pipe)
            assert (first.produced, [r.code for r in first.rejected]) == (1, ["future_timestamp"])
            assert source.etag is None  # not remembered: the next poll gets the whole feed again
            clock.now = NOW + timedelta(minutes=10)
            second = await poll(source, pipe)
            assert (second.produced, second.duplicates, second.rejected) == (1, 1, [])
            assert (await poll(source, pipe)).fetched == 0  # now 304 Not Modified
    assert [a["if-none-match"] for a in asked] == ["", "", '"v1"']
    assert [d.source_id for d in pipe.sink.sent] == ["41", "42"]


async def test_a_stocktwits_message_dated_ahead_keeps_the_cursor_before_it(tmp_path: Path) -> None:
    clock, asked = Clock(), []
    async with feed_server(asked) as (http, base):
        source = StockTwitsSource(http, "ACME", base_url=base)
        with started_pipeline(tmp_path, clock) as pipe:
            first = await poll(source, pipe)
            assert (first.produced, [r.code for r in first.rejected]) == (1, ["future_timestamp"])
            clock.now = NOW + timedelta(minutes=10)
            second = await poll(source, pipe)
            assert (second.produced, second.duplicates) == (1, 1)
            await poll(source, pipe)
    assert asked == [{}, {}, {"since": "8"}]
    assert [d.source_id for d in pipe.sink.sent] == ["7", "8"]


async def test_an_entry_a_feed_keeps_past_the_dedup_retention_is_not_news_again(tmp_path: Path) -> None:
    clock, asked, feed = Clock(), [], {"body": FEED, "etag": '"v1"'}
    clock.now = NOW + timedelta(hours=1)
    async with feed_server(asked, feed) as (http, base):
        source = RssSource(http, f"{base}/rss.xml", clock=lambda: clock.now.timestamp())
        with started_pipeline(tmp_path, clock) as pipe:
            assert (await poll(source, pipe)).produced == 2
            for _ in range(80):  # unchanged for 40 days (the retention is 30), polled every 12 hours
                clock.now += timedelta(hours=12)
                pipe.dedup.prune()  # as other feeds' commits would
                assert (await poll(source, pipe)).produced == 0
            added = "<item><guid>43</guid><title>Acme buys back shares</title></item>"
            feed.update(body=FEED.replace("<item>", added + "<item>", 1), etag='"v2"')
            clock.now += timedelta(hours=1)
            assert (await poll(source, pipe)).produced == 1
    assert [d.source_id for d in pipe.sink.sent] == ["41", "42", "43"]
    assert [a["if-none-match"] for a in asked][:4] == ["", '"v1"', "", '"v1"']  # the whole feed once a day


async def test_a_feed_is_parsed_off_the_event_loop(monkeypatch) -> None:
    # feedparser takes seconds on a feed of a few MB (20 s for 4.5 MB here): on the loop, every other source and
    # the push endpoint would wait that long.
    import ingest.sources.rss as rss

    threads = []

    def parse(*args):
        threads.append(threading.current_thread())
        return real(*args)

    real = rss.parse_feed
    monkeypatch.setattr(rss, "parse_feed", parse)
    async with feed_server([]) as (http, base):
        assert len((await RssSource(http, f"{base}/rss.xml").fetch()).items) == 2
    assert threads and threads[0] is not threading.current_thread()


UNDATED_FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>IR</title>
<item><guid>51</guid><title>Acme opens a plant</title><pubDate>Sat, 28 Nov 2026 11:00:00 GMT</pubDate></item>
<item><guid>52</guid><title>Acme names a new CFO</title></item>
<item><guid>53</guid><title>Acme wins a contract</title></item>
</channel></rss>"""


async def test_the_undated_backlog_of_a_new_feed_is_held_back_not_put_in_the_current_window(tmp_path: Path) -> None:
    asked, feed = [], {"body": UNDATED_FEED, "etag": '"v1"'}
    async with feed_server(asked, feed) as (http, base):
        with started_pipeline(tmp_path) as pipe:
            first = await poll(RssSource(http, f"{base}/rss.xml"), pipe)
            assert first.produced == 1  # the dated one goes, at its own time
            assert first.held_back == 2
            assert pipe.metrics.value("finsent_ingest_held_back_total", source="rss:127.0.0.1") == 2
            assert "held back 2," in _summary("ingest", first)
            added = "<item><guid>54</guid><title>Acme buys back shares</title></item>"
            feed.update(body=UNDATED_FEED.replace("<item>", added + "<item>", 1), etag='"v2"')
            restarted = RssSource(http, f"{base}/rss.xml")  # a known feed: its new undated item is news
            second = await poll(restarted, pipe)
            assert (second.produced, second.duplicates, second.held_back) == (1, 3, 0)
    assert [d.source_id for d in pipe.sink.sent] == ["51", "54"]
