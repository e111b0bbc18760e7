"""RSS and Atom feeds (feedparser on bytes fetched with conditional GET)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from finsent.settings import without_credentials
from ingest.items import FetchResult, Rejected, SourceItem
from ingest.sources.base import Source
from ingest.sources.http import FetchError, HttpFetcher

log = logging.getLogger(__name__)


def feed_name(url: str) -> str:
    host = (urlsplit(url).hostname or "feed").lower()
    return f"rss:{host}"[:64]


class RssSource(Source):
    """One feed. ETag / Last-Modified are sent back on the next poll (a 304 costs nothing),
    but only remembered once the items of that response reached Kafka and none was dated ahead
    of the clock (see :attr:`FetchResult.on_delivered`). The whole feed is asked for at least every
    ``full_every`` seconds: dedup renews the ids it sees again, and an entry a feed keeps unchanged
    for longer than the dedup retention would otherwise be news again once the feed changes."""

    def __init__(self, http: HttpFetcher, url: str, *, name: str | None = None, interval: float = 300.0,
                 full_every: float = 86400.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(http, name=name or feed_name(url), interval=interval)
        self.url = url
        self.full_every = full_every
        self.clock = clock
        self.etag: str | None = None
        self.last_modified: str | None = None
        self._full_at: float | None = None  # when the validators were remembered, from a whole feed

    async def fetch(self) -> FetchResult:
        headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"}
        if self._full_at is not None and self.clock() - self._full_at < self.full_every:
            if self.etag:
                headers["If-None-Match"] = self.etag
            if self.last_modified:
                headers["If-Modified-Since"] = self.last_modified
        response = await self.http.get(self.url, headers=headers)
        if response.status == 304:
            return FetchResult(not_modified=True)
        # feedparser is pure Python: a feed of a few MB takes seconds, which would stall every other source and
        # the push endpoint on this event loop.
        result = await asyncio.to_thread(parse_feed, response.body, without_credentials(self.url), self.name,
                                         response.headers.get("content-type"))
        etag, modified = response.headers.get("etag"), response.headers.get("last-modified")

        def remember() -> None:
            self.etag, self.last_modified = etag, modified
            self._full_at = self.clock()

        result.on_delivered = remember
        result.first_poll = self._full_at is None  # nothing remembered yet: the feed's backlog may be in there
        return result


def parse_feed(body: bytes, url: str, source: str, content_type: str | None = None) -> FetchResult:
    """Items of an RSS/Atom document. A feed that cannot be read at all raises FetchError;
    an entry without what a document needs is skipped (in ``rejected``), the rest go on. ``url`` is only quoted (in
    messages and ``where``): credentials masked."""
    import feedparser

    headers = {"content-type": content_type} if content_type else {}
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=True, resolve_relative_uris=False)
    if parsed.bozo and not parsed.entries:
        problem = parsed.get("bozo_exception")
        raise FetchError("parse", f"{url}: not a readable feed ({type(problem).__name__}: {problem})")
    if not parsed.entries and not parsed.get("version"):
        # An HTML page (moved feed, login wall) or an empty body: an error, not an empty feed.
        raise FetchError("parse", f"{url}: not an RSS or Atom document")
    if parsed.bozo:
        log.warning("%s: feed is not well-formed (%s); reading the %d entries found",
                    url, parsed.get("bozo_exception"), len(parsed.entries))
    result = FetchResult()
    for position, entry in enumerate(parsed.entries, start=1):
        where = f"{url} entry {position}"
        title = entry.get("title")
        content = entry.get("content")
        if content:
            body_text, body_type = content[0].get("value"), content[0].get("type", "text/html")
        else:
            body_text = entry.get("summary")
            body_type = (entry.get("summary_detail") or {}).get("type", "text/html")
        link = entry.get("link")
        source_id = entry.get("id") or link
        if not (title or body_text):
            result.rejected.append(Rejected("missing_field", "entry has neither title nor text", where))
            continue
        if not source_id:
            result.rejected.append(Rejected("missing_field", "entry has neither id/guid nor link", where))
            continue
        result.items.append(SourceItem(
            source=source,
            source_id=source_id,
            title=title,
            text=body_text,
            html="html" in (body_type or ""),
            url=link,
            published_at=entry.get("published") or entry.get("updated"),
            tickers=[t.get("term", "") for t in entry.get("tags", []) if str(t.get("term", "")).startswith("$")],
            where=where,
        ))
    return result
