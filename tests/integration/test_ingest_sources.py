"""Each polling source against a local fake server; documents land in the real Kafka
``<prefix>.raw`` in the RawDocument schema; a restart re-emits nothing."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from ingest.pipeline import Pipeline
from ingest.runner import poll
from ingest.sources.api import ApiSource, FieldMap
from ingest.sources.http import FetchError, HttpFetcher
from ingest.sources.reddit import RedditSource
from ingest.sources.rss import RssSource
from ingest.sources.stocktwits import StockTwitsSource
from tests.integration.ingest_support import FakeSite, consume_raw
from tests.ports import free_port

# The async fixture below lives in the session loop (pyproject), so the tests run there too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# Every entry that gets through is dated: a new feed's undated entries are held back as its backlog (unit tests).
RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Markets</title>
<item><guid>m-1</guid><title>Apple beats estimates</title>
  <link>https://News.Example.com/a/1?utm_source=rss&amp;id=1</link>
  <description>&lt;p&gt;Apple &lt;b&gt;reported&lt;/b&gt; record services revenue.&lt;/p&gt;</description>
  <pubDate>Fri, 27 Nov 2026 14:00:00 GMT</pubDate></item>
<item><guid>m-2</guid><title>Nvidia and $AMD rally on chip demand</title>
  <link>https://news.example.com/a/2</link><description>Chip stocks rose.</description>
  <pubDate>Fri, 27 Nov 2026 15:00:00 +0100</pubDate></item>
<item><guid>m-3</guid><title>Fed minutes due this afternoon</title>
  <link>https://news.example.com/a/3</link><description>Markets await the minutes.</description>
  <pubDate>Fri, 27 Nov 2026 16:00:00 GMT</pubDate></item>
<item><guid>m-4</guid><link>https://news.example.com/a/4</link></item>
<item><guid>m-5</guid><title>Zone-less time</title><description>x</description>
  <pubDate>2026-11-27T10:00:00</pubDate></item>
<item><guid>m-6</guid><title>From the future</title><description>y</description>
  <pubDate>Sat, 27 Nov 2027 10:00:00 GMT</pubDate></item>
</channel></rss>"""


@pytest.fixture
def ingest_settings(bootstrapped, tmp_path):
    return bootstrapped.model_copy(update={"state_dir": tmp_path / "state"})


@pytest.fixture
def pipeline(ingest_settings):
    pipe = Pipeline.build(ingest_settings, CollectorRegistry())
    pipe.start()
    yield pipe
    pipe.close()


@pytest.fixture
def fetch_pipeline(settings, tmp_path):
    """A pipeline for tests where nothing reaches Kafka (no topics needed)."""
    pipe = Pipeline.build(settings.model_copy(update={"state_dir": tmp_path / "state"}), CollectorRegistry())
    pipe.start()
    yield pipe
    pipe.close()


@pytest.fixture
async def http():
    fetcher = HttpFetcher(timeout=10, max_bytes=1_000_000)
    await fetcher.start()
    yield fetcher
    await fetcher.close()


async def test_rss_conditional_get_and_bad_entries(ingest_settings, pipeline, http) -> None:
    async with FakeSite() as site:
        def feed(request: web.Request) -> web.Response:
            if request.headers.get("If-None-Match") == '"v1"':
                return web.Response(status=304)
            return web.Response(body=RSS.encode(), content_type="application/rss+xml", headers={"ETag": '"v1"'})

        site.route("/feed.xml", feed)
        source = RssSource(http, site.url("/feed.xml"))
        report = await poll(source, pipeline)
        assert (report.fetched, report.produced) == (5, 3)
        assert sorted(r.code for r in report.rejected) == ["future_timestamp", "missing_field", "naive_timestamp"]
        assert source.etag == '"v1"'  # remembered because Kafka took every document
        again = await poll(source, pipeline)
        assert site.requests[-1].headers["If-None-Match"] == '"v1"' and again.fetched == 0

    records = consume_raw(ingest_settings, 3)
    docs = {d.source_id: (key, d) for key, d in records}
    assert len(records) == 3 and set(docs) == {"m-1", "m-2", "m-3"}
    key, apple = docs["m-1"]
    assert key == b"AAPL" and apple.tickers == ["AAPL"]
    assert apple.text == "Apple reported record services revenue."
    assert apple.url == "https://news.example.com/a/1?id=1"
    assert apple.published_at.isoformat() == "2026-11-27T14:00:00+00:00"
    assert docs["m-2"][1].tickers == ["NVDA", "AMD"] and docs["m-2"][1].published_at.hour == 14
    assert docs["m-3"][0] == source.name.encode()  # no ticker: keyed by source
    metrics = pipeline.metrics
    assert metrics.value("finsent_ingest_produced_total", source=source.name) == 3
    assert metrics.value("finsent_ingest_errors_total", source=source.name, stage="invalid") == 3
    assert metrics.value("finsent_ingest_fetch_seconds_count", source=source.name) == 2


async def test_rss_failures_are_reported_never_crash(fetch_pipeline, http) -> None:
    pipeline = fetch_pipeline
    async with FakeSite() as site:
        site.serve("/limited", "slow down", "text/plain", status=429, headers={"Retry-After": "7"})
        site.serve("/broken", b"<rss><channel><item><title>unclosed", "application/xml")
        site.serve("/huge", b"<rss>" + b" " * 2_000_000 + b"</rss>", "application/xml")
        site.serve("/binary", b"\xff\xfe\x00garbage\x00\x80", "application/xml")
        with pytest.raises(FetchError) as limited:
            await poll(RssSource(http, site.url("/limited")), pipeline)
        assert (limited.value.reason, limited.value.retry_after) == ("rate_limited", 7.0)
        # A truncated feed: feedparser recovers what it can; the empty entry is skipped with its reason.
        broken = await poll(RssSource(http, site.url("/broken"), name="rss:broken"), pipeline)
        assert broken.produced == 0 and [r.code for r in broken.rejected] == ["missing_field"]
        for path, reason in (("/huge", "too_large"), ("/binary", "parse")):
            with pytest.raises(FetchError) as caught:
                await poll(RssSource(http, site.url(path), name=f"rss:{path}"), pipeline)
            assert caught.value.reason == reason, path
        with pytest.raises(FetchError) as refused:
            await poll(RssSource(http, "http://127.0.0.1:9/nothing-listens-here"), pipeline)
        assert refused.value.reason == "network"
    assert pipeline.metrics.value("finsent_ingest_errors_total", stage="fetch") == 4


async def test_api_reddit_stocktwits(ingest_settings, pipeline, http) -> None:
    api_body = {"data": {"articles": [
        {"id": 11, "headline": "Tesla cuts prices", "summary": "Tesla cut prices in China.",
         "link": "https://wire.example.com/t", "time": 1795773600000, "symbols": [{"s": "TSLA"}]},
        {"id": 12, "headline": "No body here", "time": 1795773600000},
        "not an object",
    ]}}
    listing = {"kind": "Listing", "data": {"after": "t3_b", "children": [
        {"kind": "t3", "data": {"id": "a", "name": "t3_a", "title": "Thoughts on $MSFT after earnings?",
                                "selftext": "Azure growth & margins look great", "url": "https://x.com/",
                                "permalink": "/r/stocks/comments/a/thoughts/", "created_utc": 1795773600.0,
                                "subreddit": "stocks", "author": "someone"}},
        {"kind": "t3", "data": {"id": "b", "name": "t3_b", "title": "no time", "selftext": ""}},
        {"kind": "t1", "data": {"id": "c"}},
    ]}}
    stream = {"symbol": {"symbol": "AAPL"}, "cursor": {"more": True, "since": 900, "max": 899},
              "response": {"status": 200}, "messages": [
        {"id": 900, "body": "$AAPL looking strong into the close", "created_at": "2026-11-27T13:00:00Z",
         "user": {"username": "trader1"}, "symbols": [{"symbol": "AAPL"}],
         "entities": {"sentiment": {"basic": "Bullish"}}},
        {"id": 899, "body": "", "created_at": "2026-11-27T12:59:00Z", "user": {"username": "t2"}, "symbols": []},
    ]}
    async with FakeSite() as site:
        site.serve("/v1/latest", orjson.dumps(api_body))
        site.serve("/r/stocks/new.json", orjson.dumps(listing))
        site.serve("/streams/symbol/AAPL.json", orjson.dumps(stream))
        fields = FieldMap(text="summary", title="headline", source_id="id", url="link", published_at="time",
                          tickers="symbols", ticker_key="s")
        api = ApiSource(http, site.url("/v1/latest"), name="api:wire", fields=fields, items="data.articles")
        reddit = RedditSource(http, "stocks", base_url=site.url(""))
        twits = StockTwitsSource(http, "AAPL", base_url=site.url(""))
        reports = [await poll(s, pipeline) for s in (api, reddit, twits)]
        assert [r.produced for r in reports] == [2, 1, 1]  # "No body here" keeps its title as text
        assert [len(r.rejected) for r in reports] == [1, 2, 1]
        assert twits.since == 900
        await poll(twits, pipeline)
        assert site.requests[-1].query["since"] == "900"
        assert site.requests[1].query["raw_json"] == "1"

    docs = {d.source: d for _, d in consume_raw(ingest_settings, 4) if d.source != "api:wire" or d.source_id == "11"}
    assert docs["api:wire"].tickers == ["TSLA"] and docs["api:wire"].published_at.year == 2026
    assert docs["reddit"].source_id == "t3_a" and docs["reddit"].tickers == ["MSFT"]
    assert docs["reddit"].url.endswith("/r/stocks/comments/a/thoughts/")
    assert docs["reddit"].text == "Azure growth & margins look great"
    assert docs["stocktwits"].tickers == ["AAPL"] and docs["stocktwits"].source_id == "900"


async def test_restart_re_emits_nothing(ingest_settings, http) -> None:
    async with FakeSite() as site:
        site.serve("/feed.xml", RSS, "application/rss+xml")
        for _ in range(2):  # the second process starts from the persisted state only
            pipe = Pipeline.build(ingest_settings, CollectorRegistry())
            pipe.start()
            try:
                report = await poll(RssSource(http, site.url("/feed.xml")), pipe)
            finally:
                pipe.close()
        assert (report.produced, report.duplicates) == (0, 3)
    assert len(consume_raw(ingest_settings, 3)) == 3


async def test_undelivered_documents_are_retried_not_forgotten(ingest_settings, http) -> None:
    async with FakeSite() as site:
        site.serve("/feed.xml", RSS, "application/rss+xml")
        pipe = Pipeline.build(ingest_settings, CollectorRegistry())
        # No broker answers (api_version given: the producer does not look for one at start), so the
        # first document fails after max_block_ms, the rest with it: a delivery failure, worth another try.
        pipe.sink.producer_overrides = {"bootstrap_servers": [f"127.0.0.1:{free_port()}"], "api_version": (3, 9),
                                        "max_block_ms": 1000}
        pipe.start()
        source = RssSource(http, site.url("/feed.xml"))
        try:
            report = await poll(source, pipe)
            assert report.produced == 0 and len(report.failed) == 3
            # Only the first send waits out max_block_ms; the others fail without trying.
            errors = [error for _, error in report.failed]
            assert errors[0].startswith("KafkaTimeoutError") and all(e.startswith("not sent") for e in errors[1:])
            assert pipe.metrics.value("finsent_ingest_errors_total", stage="delivery") == 3
            assert source.etag is None and len(pipe.dedup) == 0
        finally:
            pipe.close()
        healthy = Pipeline.build(ingest_settings, CollectorRegistry())
        healthy.start()
        try:
            assert (await poll(source, healthy)).produced == 3
        finally:
            healthy.close()
    assert len(consume_raw(ingest_settings, 3)) == 3


async def test_a_document_kafka_refuses_is_skipped_the_others_delivered(ingest_settings, http) -> None:
    big = ("<item><guid>m-7</guid><title>A very long story</title><link>https://news.example.com/a/7</link>"
           "<pubDate>Fri, 27 Nov 2026 16:00:00 GMT</pubDate>"
           f"<description>{'Markets moved. ' * 400}</description></item></channel>")
    async with FakeSite() as site:
        site.serve("/feed.xml", RSS.replace("</channel>", big), "application/rss+xml", headers={"ETag": '"v1"'})
        pipe = Pipeline.build(ingest_settings, CollectorRegistry())
        pipe.sink.producer_overrides = {"max_request_size": 2000}  # the client refuses the 6 KB document only
        pipe.start()
        source = RssSource(http, site.url("/feed.xml"))
        try:
            report = await poll(source, pipe)
            assert (report.produced, report.failed) == (3, [])
            assert [r.code for r in report.rejected if r.where.endswith("entry 7")] == ["too_large"]
            assert source.etag == '"v1"'  # sending it again would fail again: the feed counts as delivered
            assert len(pipe.dedup) == 3
        finally:
            pipe.close()
    assert len(consume_raw(ingest_settings, 3)) == 3
