"""Reddit: a subreddit's new-posts listing (``/r/<sub>/new.json``)."""

from __future__ import annotations

import logging

from finsent.settings import without_credentials
from ingest.items import FetchResult, Rejected, SourceItem
from ingest.sources.base import Source, load_json
from ingest.sources.http import FetchError, HttpFetcher

log = logging.getLogger(__name__)


class RedditSource(Source):
    """A page holds the newest ``limit`` posts (at most 100). Once a poll was delivered, the next one follows the
    listing's ``after`` page by page, up to ``max_pages``, until it reaches a post no newer than the newest
    delivered one, so a busy subreddit loses nothing between two polls. The first poll takes one page."""

    def __init__(self, http: HttpFetcher, subreddit: str, *, base_url: str = "https://www.reddit.com",
                 interval: float = 120.0, limit: int = 100, max_pages: int = 10) -> None:
        subreddit = subreddit.removeprefix("r/").strip("/")
        super().__init__(http, name=f"reddit:{subreddit}"[:64], interval=interval)
        self.subreddit = subreddit
        self.base_url = base_url.rstrip("/")
        self.limit = limit
        self.max_pages = max_pages
        self.seen_until: float | None = None  # created_utc of the newest delivered post

    async def fetch(self) -> FetchResult:
        url = f"{self.base_url}/r/{self.subreddit}/new.json"
        shown = without_credentials(url)  # FINSENT_REDDIT_BASE_URL may carry some
        result, after, newest = FetchResult(), None, None
        for _ in range(self.max_pages):
            # raw_json=1: titles and bodies come unescaped (no &amp;).
            params = {"limit": str(self.limit), "raw_json": "1"} | ({"after": after} if after else {})
            payload = load_json((await self.http.get(url, params=params)).body, shown)
            page = parse_listing(payload, shown, self.base_url)
            result.items += page.items
            result.rejected += page.rejected
            times = [item.published_at for item in page.items if isinstance(item.published_at, int | float)]
            if times:
                newest = max(newest or 0, *times)
            after = payload["data"].get("after")
            if self.seen_until is None or not times or min(times) <= self.seen_until or not isinstance(after, str):
                break
        else:
            log.warning("%s: more than %d pages of new posts since the last poll; the older ones are skipped "
                        "(poll it more often)", self.name, self.max_pages)
        if newest is not None:
            def advance() -> None:
                self.seen_until = max(self.seen_until or 0, newest)
            result.on_delivered = advance
        return result


def parse_listing(payload: object, url: str, base_url: str = "https://www.reddit.com") -> FetchResult:
    if not isinstance(payload, dict) or payload.get("kind") != "Listing" or not isinstance(payload.get("data"), dict):
        raise FetchError("parse", f"{url}: not a Reddit Listing")
    children = payload["data"].get("children")
    if not isinstance(children, list):
        raise FetchError("parse", f"{url}: Listing has no children list")
    result = FetchResult()
    for position, child in enumerate(children):
        where = f"{url} children[{position}]"
        post = child.get("data") if isinstance(child, dict) else None
        if not isinstance(post, dict) or child.get("kind") != "t3":
            result.rejected.append(Rejected("bad_shape", "not a t3 post", where))
            continue
        name = post.get("name") or (f"t3_{post['id']}" if post.get("id") else None)
        title = post.get("title")
        created = post.get("created_utc")
        missing = [f for f, v in (("name/id", name), ("title", title), ("created_utc", created)) if not v]
        if missing:
            result.rejected.append(Rejected("missing_field", f"post lacks {', '.join(missing)}", where))
            continue
        permalink = post.get("permalink")
        result.items.append(SourceItem(
            source="reddit",
            source_id=str(name),
            title=str(title),
            text=post.get("selftext") or str(title),
            html=False,
            # The permalink, not the linked article: a post about a story is not that story.
            url=f"{base_url}{permalink}" if isinstance(permalink, str) and permalink.startswith("/") else None,
            published_at=created if isinstance(created, int | float) else str(created),
            where=where,
        ))
    return result
