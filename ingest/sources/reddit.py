"""Reddit: a subreddit's new-posts listing (``/r/<sub>/new.json``)."""

from __future__ import annotations

from ingest.items import FetchResult, Rejected, SourceItem
from ingest.sources.base import Source, load_json
from ingest.sources.http import FetchError, HttpFetcher


class RedditSource(Source):
    def __init__(self, http: HttpFetcher, subreddit: str, *, base_url: str = "https://www.reddit.com",
                 interval: float = 120.0, limit: int = 100) -> None:
        subreddit = subreddit.removeprefix("r/").strip("/")
        super().__init__(http, name=f"reddit:{subreddit}"[:64], interval=interval)
        self.subreddit = subreddit
        self.base_url = base_url.rstrip("/")
        self.limit = limit

    async def fetch(self) -> FetchResult:
        url = f"{self.base_url}/r/{self.subreddit}/new.json"
        # raw_json=1: titles and bodies come unescaped (no &amp;).
        response = await self.http.get(url, params={"limit": str(self.limit), "raw_json": "1"})
        return parse_listing(load_json(response.body, url), url, self.base_url)


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
