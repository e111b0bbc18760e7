"""Parsing of source payloads and bad input, backoff, replay pacing and the sources file."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.backoff import Backoff, parse_retry_after
from ingest.config import build_sources, load_sources_file
from ingest.items import Rejected, SourceItem
from ingest.replay import Pacer, holds_no_records, read_items
from ingest.sources.api import FieldMap, parse_articles
from ingest.sources.base import get_path
from ingest.sources.http import FetchError, HttpFetcher
from ingest.sources.reddit import parse_listing
from ingest.sources.rss import parse_feed
from ingest.sources.stocktwits import parse_stream

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
<entry><id>urn:1</id><title>Alphabet beats</title><link href="https://e.com/1"/>
<updated>2026-11-27T10:00:00Z</updated><content type="html">&lt;p&gt;Cloud grew.&lt;/p&gt;</content></entry>
<entry><id>urn:2</id><title>Control \x01char</title><updated>2026-11-27T11:00:00+02:00</updated>
<summary>plain</summary></entry>
</feed>"""


def test_atom_feed() -> None:
    result = parse_feed(ATOM, "https://e.com/atom", "rss:e.com")
    assert [i.source_id for i in result.items] == ["urn:1", "urn:2"]
    first = result.items[0]
    assert first.html and "Cloud grew" in first.text and first.published_at == "2026-11-27T10:00:00Z"


@pytest.mark.parametrize("body", [b"", b"not xml at all {", b"\x00\x01\x02" * 100, b"<html><body>hi</body></html>"])
def test_unreadable_feeds_raise_fetch_error(body: bytes) -> None:
    with pytest.raises(FetchError) as caught:
        parse_feed(body, "https://e.com/f", "rss:e.com")
    assert caught.value.reason == "parse"


def test_feed_with_invalid_utf8_keeps_its_entries() -> None:
    body = b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>' \
           b"<item><guid>1</guid><title>Caf\xe9 profits</title></item></channel></rss>"
    result = parse_feed(body, "https://e.com/f", "rss:e.com")
    assert len(result.items) == 1 and "profits" in result.items[0].title


def test_reddit_listing_shape_errors() -> None:
    with pytest.raises(FetchError):
        parse_listing({"kind": "t3"}, "u")
    with pytest.raises(FetchError):
        parse_listing([1, 2], "u")
    result = parse_listing({"kind": "Listing", "data": {"children": [
        "junk", {"kind": "t3", "data": {"id": "x", "title": "T", "created_utc": 1.0}}]}}, "u")
    assert len(result.items) == 1 and result.items[0].source_id == "t3_x" and len(result.rejected) == 1


def test_stocktwits_errors() -> None:
    with pytest.raises(FetchError):
        parse_stream({"response": {"status": 200}}, "u")
    with pytest.raises(FetchError) as caught:
        parse_stream({"response": {"status": 429}, "messages": []}, "u")
    assert caught.value.reason == "api_429"
    result, newest = parse_stream({"messages": [{"id": 5, "body": "hi", "created_at": "2026-11-27T10:00:00Z"},
                                                {"id": 6}]}, "u")
    assert newest == 5 and len(result.items) == 1 and result.rejected[0].code == "missing_field"


def test_api_mapping_and_dotted_paths() -> None:
    assert get_path({"a": [{"b": 1}]}, "a.0.b") == 1
    assert get_path({"a": [{"b": 1}]}, "a.5.b") is None
    assert get_path({"a": "x"}, "a.b") is None
    fields = FieldMap(text="body.text", source_id="meta.id", published_at="meta.ts", tickers="tags")
    result = parse_articles({"items": [{"body": {"text": "T"}, "meta": {"id": 3, "ts": 1795773600}, "tags": "AAPL, MSFT"}]},
                            "u", "api:x", fields, "items")
    item = result.items[0]
    assert (item.text, item.source_id, item.published_at, item.tickers) == ("T", "3", 1795773600, ["AAPL", "MSFT"])
    with pytest.raises(FetchError):
        parse_articles({"items": {}}, "u", "api:x", fields, "items")


def test_backoff_is_exponential_jittered_capped_and_honours_retry_after() -> None:
    backoff = Backoff(base=2, cap=10, rng=lambda: 1.0)
    assert [backoff.failure() for _ in range(5)] == [2, 4, 8, 10, 10]
    low = Backoff(base=2, cap=10, rng=lambda: 0.0)
    assert low.failure() == 1.0  # equal jitter: at least half the delay
    assert low.failure(retry_after=30) == 30
    low.success()
    assert low.failures == 0


def test_retry_after_header() -> None:
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Sat, 28 Nov 2026 12:01:00 GMT", now) == 60
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None


def test_pacer_rate_and_speed() -> None:
    rate = Pacer(rate=4)
    assert [rate.due(SourceItem("s", "t")) for _ in range(3)] == [0, 0.25, 0.5]
    speed = Pacer(speed=60)
    times = ["2026-11-27T10:00:00Z", "2026-11-27T10:02:00Z", None, "2026-11-27T10:01:00Z", "2026-11-27T10:05:00Z"]
    assert [speed.due(SourceItem("s", "t", published_at=t)) for t in times] == [0, 2, 2, 2, 5]
    with pytest.raises(ValueError):
        Pacer(rate=1, speed=1)


def test_read_items_csv_without_text_column(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("headline\nhello\n", "utf-8")
    entries = list(read_items(path))
    assert len(entries) == 1 and isinstance(entries[0], Rejected) and entries[0].code == "missing_field"


@pytest.mark.parametrize("name,content,empty", [
    ("empty.jsonl", b"", True),
    ("blank.jsonl", b"\n  \n\r\n", True),
    ("bom.jsonl", b"\xef\xbb\xbf\n\n", True),  # Notepad's mark on an empty first line
    ("empty.csv", b"", True),
    ("blank.csv", b"\n\n", True),
    ("header.csv", b"text,source\n\n", True),
    ("late.jsonl", b"\n\n{\"text\": \"Acme beats\"}\n", False),
    ("bad.jsonl", b"not json\n", False),  # a bad line is skipped with its number by the replay, not "empty"
    ("headline.csv", b"headline\n", False),  # the wrong header is what file_problem names
    ("row.csv", b"text\nAcme beats\n", False),
])
def test_a_file_without_records_is_found_before_any_is_read(tmp_path: Path, name: str, content: bytes,
                                                            empty: bool) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert holds_no_records(path) is empty


def test_a_pipe_is_never_read_to_find_it_empty(tmp_path: Path) -> None:
    pipe = tmp_path / "feed.jsonl"
    os.mkfifo(pipe)  # nobody writes: opening it would block
    assert holds_no_records(pipe) is False


def test_sources_file(tmp_path: Path, settings_for_config) -> None:
    path = tmp_path / "sources.yml"
    path.write_text("""
sources:
  - {type: rss, urls: ["https://a.com/feed", "https://b.com/feed"], interval: 60}
  - type: api
    name: wire
    url: https://api.example.com/v1
    headers: {Authorization: "Bearer ${INGEST_TEST_TOKEN}"}
    items: data
    fields: {text: body}
  - {type: reddit, subreddits: [stocks, investing]}
  - {type: stocktwits, symbol: aapl}
push: {port: 9999}
""", "utf-8")
    import os
    os.environ["INGEST_TEST_TOKEN"] = "tok"
    try:
        parsed = load_sources_file(path)
    finally:
        del os.environ["INGEST_TEST_TOKEN"]
    sources = build_sources(parsed, HttpFetcher(), settings_for_config)
    assert [s.name for s in sources] == ["rss:a.com", "rss:b.com", "api:wire", "reddit:stocks", "reddit:investing",
                                         "stocktwits:AAPL"]
    assert sources[2].headers["Authorization"] == "Bearer tok" and sources[0].interval == 60
    assert parsed.push.port == 9999


@pytest.mark.parametrize("text,message", [
    ("sources: [{type: ftp, url: x}]", "sources.0"),
    ("sources: [{kind: rss, urls: ['https://x']}]", r"sources\.0: no type; say which kind of source it is "
                                                    r"\(rss, api, reddit, stocktwits\)"),
    ("sources: [{type: rss, urls: []}]", "urls"),
    ("sources: [{type: rss, urls: [x], colour: red}]", "colour"),
    ("sources: [{type: api, name: a, url: 'https://x', fields: {}}]", "fields.text"),
    ("sources: [", "sources.yml"),
    ("sources: [{type: api, name: a, url: 'https://x', headers: {A: '${INGEST_UNSET_VAR}'}, fields: {text: t}}]",
     "INGEST_UNSET_VAR"),
    # entries that would build no source, or one that can never fetch
    ("sources: [{type: rss, urls: ['https://x']}, {type: reddit}]", r"sources\.1\.reddit: .*no subreddit"),
    ("sources: [{type: stocktwits, symbols: []}]", r"sources\.0\.stocktwits: .*no symbol"),
    ("sources: [{type: reddit, subreddit: ''}]", r"sources\.0\.reddit\.subreddit"),
    ("sources: [{type: reddit, subreddits: [r/stocks]}]", r"sources\.0\.reddit\.subreddits\.0"),
    ("sources: [{type: rss, urls: ['http://[::1/feed']}]", r"sources\.0\.rss\.urls\.0: .*not a valid URL"),
    ("sources: [{type: api, name: a, url: 'https://', fields: {text: t}}]", r"sources\.0\.api\.url: .*no host"),
    # an interval the command line would refuse: a thousand polls a second, one poll ever, YAML's true read as 1 s
    ("sources: [{type: reddit, subreddit: a, interval: 0.001}]", r"sources\.0\.reddit\.interval: .*equal to 0\.1"),
    ("sources: [{type: rss, urls: ['https://x'], interval: .inf}]", r"sources\.0\.rss\.interval: .*finite"),
    ("sources: [{type: stocktwits, symbol: A, interval: true}]", r"sources\.0\.stocktwits\.interval: .*number"),
])
def test_bad_sources_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sources.yml"
    path.write_text(text, "utf-8")
    with pytest.raises(ValueError, match=message):
        load_sources_file(path)


def test_an_interval_may_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INGEST_TEST_POLL_S", "30")  # expanded after parsing, so it reaches the model as text
    path = tmp_path / "sources.yml"
    path.write_text("sources: [{type: stocktwits, symbol: A, interval: '${INGEST_TEST_POLL_S}'}]", "utf-8")
    assert load_sources_file(path).sources[0].interval == 30.0


@pytest.mark.parametrize("entries,message", [
    ("{type: rss, urls: ['https://a.com/markets.xml', 'https://a.com/earnings.xml']}",
     r"2 sources are named 'rss:a\.com' \(https://a\.com/markets\.xml, https://a\.com/earnings\.xml\)"),
    ("{type: api, name: n, url: 'https://a.com/v1', fields: {text: t}}, "
     "{type: api, name: n, url: 'https://b.com/v1', fields: {text: t}}", "named 'api:n'"),
    ("{type: reddit, subreddits: [stocks]}, {type: reddit, subreddit: Stocks}", "named 'reddit:stocks'"),
])
def test_two_sources_under_one_name_are_refused(tmp_path: Path, settings_for_config, entries: str,
                                                message: str) -> None:
    # Their metrics and logs would be one: a feed that fails hidden by a healthy one of the same host.
    path = tmp_path / "sources.yml"
    path.write_text(f"sources: [{entries}]", "utf-8")
    with pytest.raises(ValueError, match=message):
        build_sources(load_sources_file(path), HttpFetcher(), settings_for_config)


async def test_an_unusable_url_is_a_fetch_error() -> None:
    fetcher = HttpFetcher()
    try:
        for url in ("http://[::1/feed", "https://exa\u00a0mple.com/x"):
            with pytest.raises(FetchError) as caught:
                await fetcher.get(url)
            assert caught.value.reason == "bad_url" and url in caught.value.detail
    finally:
        await fetcher.close()


async def test_a_server_that_trickles_cannot_hold_a_source() -> None:
    from aiohttp import web

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(50):  # a byte every 0.1 s: never idle for the per-read timeout, done after 5 s
            await response.write(b"x")
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.router.add_get("/feed", trickle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fetcher = HttpFetcher(timeout=1.0, deadline=0.5)
    try:
        with pytest.raises(FetchError) as caught:
            await fetcher.get(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/feed")
        assert caught.value.reason == "timeout" and "not complete after 0.5s" in caught.value.detail
    finally:
        await fetcher.close()
        await runner.cleanup()


@pytest.mark.parametrize("name,content", [
    ("excel.csv", "text,source\nAcme shares rise,wire\n"),
    ("notepad.jsonl", '{"text": "Acme shares rise", "source": "wire"}\n'),
])
def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_bytes(("\ufeff" + content).encode("utf-8"))
    [entry] = read_items(path)
    assert isinstance(entry, SourceItem) and (entry.text, entry.source) == ("Acme shares rise", "wire")


def test_a_variable_is_a_value_after_parsing_and_cannot_change_the_files_structure(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    path = tmp_path / "sources.yml"
    path.write_text('sources:\n  - {type: api, name: a, url: "https://x/v1", fields: {text: t},\n'
                    '     headers: {Authorization: "Bearer ${INGEST_TEST_TOKEN}"}}  # ${NOT_EXPANDED_IN_A_COMMENT}\n')
    token = 'tok" #}], push: {port: 1}'  # text that would end the string and the list if pasted into the file
    monkeypatch.setenv("INGEST_TEST_TOKEN", token)
    parsed = load_sources_file(path)
    assert parsed.sources[0].headers == {"Authorization": f"Bearer {token}"} and parsed.push is None


def test_a_yaml_error_says_where_never_what_the_line_holds(tmp_path: Path) -> None:
    path = tmp_path / "sources.yml"
    path.write_text('sources:\n  - {type: api, headers: {Authorization: "Bearer s3cret-token}\n')
    with pytest.raises(ValueError) as caught:
        load_sources_file(path)
    message = str(caught.value)
    assert "s3cret-token" not in message and "Bearer" not in message
    assert message.startswith(f"{path}: not valid YAML: ") and "(line 2, column " in message


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "sources.yml"
    path.write_text("sources:\n  - {type: reddit, subreddit: stocks}\nsources:\n  - {type: reddit, subreddit: wsb}\n")
    with pytest.raises(ValueError, match=r"not valid YAML: key 'sources' first given \(line 1, column 1\).*"
                                         r"given again .*\(line 3, column 1\)"):
        load_sources_file(path)  # the second list would silently have replaced the first
    path.write_text("sources:\n  - &r {type: reddit, subreddit: stocks, interval: 60}\n"
                    "  - {<<: *r, subreddit: wsb, interval: 30}\n")  # a merge's keys may be overridden
    assert [(s.subreddit, s.interval) for s in load_sources_file(path).sources] == [("stocks", 60), ("wsb", 30)]


@pytest.fixture
def settings_for_config():
    from finsent.settings import load_settings

    return load_settings()
