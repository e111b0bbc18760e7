"""A busy StockTwits symbol or subreddit: more new posts between two polls than one page holds are all read,
against a real local HTTP server that pages as the sites do (newest first)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from ingest.runner import poll
from ingest.sources.reddit import RedditSource
from ingest.sources.stocktwits import StockTwitsSource
from tests.unit.test_ingest_pipeline import NOW, serving, started_pipeline


def created(n: int):
    return NOW - timedelta(hours=2) + timedelta(seconds=n)


class Site:
    """Posts numbered 1, 2… (newest last); each request's query is kept in ``asked``."""

    def __init__(self) -> None:
        self.count = 0
        self.asked: list[dict[str, str]] = []

    def newest_first(self, above: int = 0, up_to: int = 10**9) -> list[int]:
        return [n for n in range(self.count, 0, -1) if above < n <= up_to]

    async def stocktwits(self, request: web.Request) -> web.Response:  # 30 a page; since < id <= max
        self.asked.append(dict(request.query))
        ids = self.newest_first(int(request.query.get("since", 0)), int(request.query.get("max", 10**9)))
        page = ids[:30]
        messages = [{"id": n, "body": f"$ACME message {n} on the quarter", "created_at": created(n).isoformat()}
                    for n in page]
        cursor = {"more": len(ids) > 30, "since": page[0] if page else None, "max": page[-1] if page else None}
        return web.json_response({"response": {"status": 200}, "cursor": cursor, "messages": messages})

    async def reddit(self, request: web.Request) -> web.Response:  # limit a page; after=t3_<n>: older than n
        self.asked.append(dict(request.query))
        after = request.query.get("after")
        ids = self.newest_first(up_to=int(after.removeprefix("t3_")) - 1 if after else 10**9)
        page = ids[:int(request.query["limit"])]
        children = [{"kind": "t3", "data": {"name": f"t3_{n}", "title": f"Post {n} on $ACME results",
                                            "created_utc": created(n).timestamp()}} for n in page]
        return web.json_response({"kind": "Listing", "data": {
            "children": children, "after": f"t3_{page[-1]}" if len(ids) > len(page) else None}})


@contextlib.asynccontextmanager
async def serving_site(site: Site):
    app = web.Application()
    app.router.add_get("/streams/symbol/ACME.json", site.stocktwits)
    app.router.add_get("/r/acme/new.json", site.reddit)
    async with serving(app) as served:
        yield served


async def test_stocktwits_reads_every_page_of_what_came_since_the_last_poll(tmp_path: Path) -> None:
    site = Site()
    async with serving_site(site) as (http, base):
        source = StockTwitsSource(http, "ACME", base_url=base)
        with started_pipeline(tmp_path) as pipe:
            site.count = 40
            assert (await poll(source, pipe)).produced == 30  # the first poll: one page, older ones are no news
            site.count = 140
            assert (await poll(source, pipe)).produced == 100
    assert site.asked == [{}, {"since": "40"}, {"since": "40", "max": "110"}, {"since": "40", "max": "80"},
                          {"since": "40", "max": "50"}]
    assert sorted(int(d.source_id) for d in pipe.sink.sent) == list(range(11, 141))


async def test_reddit_follows_the_listing_back_to_the_newest_post_it_delivered(tmp_path: Path) -> None:
    site = Site()
    async with serving_site(site) as (http, base):
        source = RedditSource(http, "acme", base_url=base, limit=25)
        with started_pipeline(tmp_path) as pipe:
            site.count = 40
            assert (await poll(source, pipe)).produced == 25
            site.count = 100
            second = await poll(source, pipe)
            assert (second.produced, second.duplicates) == (60, 15)  # the page that reached post 40 has old ones
    assert [a.get("after") for a in site.asked] == [None, None, "t3_76", "t3_51"]
    assert sorted(int(d.source_id.removeprefix("t3_")) for d in pipe.sink.sent) == list(range(16, 101))
