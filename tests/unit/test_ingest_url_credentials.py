"""A source URL's credentials (a feed's `?apikey=`, a user part) are used for the fetch but masked wherever the URL is
quoted: fetch errors (logged each retry), skipped entries, the sources file's errors."""

from __future__ import annotations

import pytest
from aiohttp import web

from finsent.settings import Settings
from ingest.config import RssConfig, SourcesFile, build_sources
from ingest.sources.api import ApiSource, FieldMap
from ingest.sources.http import FetchError, HttpFetcher
from ingest.sources.rss import RssSource

KEY = "hunter2"


class Site:
    """Answers ``bodies[path]`` (status 200), or 500 for any other path; keeps each request's query."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies, self.queries = bodies, []

    async def __aenter__(self) -> Site:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        body = self.bodies.get(request.path)
        return web.Response(body=body) if body is not None else web.Response(status=500)


async def fetch_error(source) -> str:
    try:
        await source.fetch()
    except FetchError as exc:
        return exc.detail
    raise AssertionError("the fetch did not fail")


async def test_fetch_errors_mask_the_key_in_a_feeds_url() -> None:
    http = HttpFetcher(timeout=5)
    try:
        async with Site({"/page": b"<html>moved</html>"}) as site:
            failing = await fetch_error(RssSource(http, f"{site.base}/feed.xml?apikey={KEY}&q=AAPL"))
            html = await fetch_error(RssSource(http, f"{site.base}/page?token={KEY}"))
            not_json = await fetch_error(ApiSource(http, f"{site.base}/page?api_key={KEY}", name="api:n",
                                                   fields=FieldMap(text="t")))
            assert site.queries[0] == {"apikey": KEY, "q": "AAPL"}  # sent as given
        closed = await fetch_error(RssSource(http, f"http://ops:{KEY}@127.0.0.1:{site.base.rsplit(':', 1)[1]}/f"))
    finally:
        await http.close()
    assert failing.endswith("/feed.xml?apikey=***&q=AAPL: HTTP 500")
    assert "/page?token=***: not a" in html  # not a readable feed
    assert "/page?api_key=***: not valid JSON" in not_json
    assert closed.startswith("http://***@127.0.0.1:") and "ConnectError" in closed
    assert not [detail for detail in (failing, html, not_json, closed) if KEY in detail]


async def test_a_skipped_entry_names_the_feed_without_its_key() -> None:
    feed = b"<rss version='2.0'><channel><title>t</title><item><link>https://n.example/1</link></item></channel></rss>"
    http = HttpFetcher(timeout=5)
    try:
        async with Site({"/feed.xml": feed}) as site:
            result = await RssSource(http, f"{site.base}/feed.xml?apikey={KEY}").fetch()
    finally:
        await http.close()
    [skipped] = result.rejected
    assert skipped.where.endswith("/feed.xml?apikey=*** entry 1") and KEY not in str(skipped)


def test_two_sources_of_one_name_are_named_without_their_keys(tmp_path) -> None:
    config = SourcesFile(sources=[RssConfig(type="rss", urls=[f"https://n.example/a?apikey={KEY}",
                                                             f"https://n.example/b?token={KEY}"])])
    with pytest.raises(ValueError, match="2 sources are named 'rss:n.example'") as info:
        build_sources(config, HttpFetcher(), Settings(state_dir=tmp_path))
    assert "https://n.example/a?apikey=***" in str(info.value) and KEY not in str(info.value)

