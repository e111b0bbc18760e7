"""StockTwits: a symbol's message stream (``/streams/symbol/<SYMBOL>.json``)."""

from __future__ import annotations

import logging

from finsent.settings import without_credentials
from ingest.items import FetchResult, Rejected, SourceItem
from ingest.sources.base import Source, load_json
from ingest.sources.http import FetchError, HttpFetcher

log = logging.getLogger(__name__)


class StockTwitsSource(Source):
    """Asks only for messages newer than the last delivered one (``since``); a poll with a message
    dated ahead of the clock leaves ``since`` where it was, so that message comes again.

    A page holds the newest 30 messages after ``since``: when the cursor says there are ``more`` (a busy symbol
    between two polls), the older ones are asked for page by page (``max``), up to ``max_pages``, so none is lost.
    The first poll takes one page: older messages are no news."""

    def __init__(self, http: HttpFetcher, symbol: str, *, base_url: str = "https://api.stocktwits.com/api/2",
                 interval: float = 60.0, max_pages: int = 10) -> None:
        symbol = symbol.lstrip("$").upper()
        super().__init__(http, name=f"stocktwits:{symbol}"[:64], interval=interval)
        self.symbol = symbol
        self.base_url = base_url.rstrip("/")
        self.max_pages = max_pages
        self.since: int | None = None

    async def fetch(self) -> FetchResult:
        url = f"{self.base_url}/streams/symbol/{self.symbol}.json"
        shown = without_credentials(url)  # FINSENT_STOCKTWITS_BASE_URL may carry some
        result, newest, below = FetchResult(), None, None
        for _ in range(self.max_pages):
            params = {"since": str(self.since)} if self.since is not None else {}
            if below is not None:
                params["max"] = str(below)
            payload = load_json((await self.http.get(url, params=params or None)).body, shown)
            page, page_newest = parse_stream(payload, shown)
            result.items += page.items
            result.rejected += page.rejected
            newest = page_newest if newest is None else max(newest, page_newest or 0)
            oldest = min((int(item.source_id) for item in page.items if item.source_id.isdigit()), default=None)
            if self.since is None or not _more(payload) or oldest is None or (below is not None and oldest > below):
                break
            below = oldest - 1  # max is inclusive
        else:
            log.warning("%s: more than %d pages of new messages since the last poll; the older ones are skipped "
                        "(poll it more often)", self.name, self.max_pages)
        if newest is not None:
            def advance() -> None:
                self.since = max(self.since or 0, newest)
            result.on_delivered = advance
        return result


def _more(payload: dict) -> bool:
    cursor = payload.get("cursor")
    return isinstance(cursor, dict) and cursor.get("more") is True


def parse_stream(payload: object, url: str) -> tuple[FetchResult, int | None]:
    """Items of a stream payload and the newest message id in it."""
    if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
        raise FetchError("parse", f"{url}: no messages list")
    status = (payload.get("response") or {}).get("status") if isinstance(payload.get("response"), dict) else None
    if status not in (None, 200):
        raise FetchError(f"api_{status}", f"{url}: StockTwits answered status {status}")
    result, newest = FetchResult(), None
    for position, message in enumerate(payload["messages"]):
        where = f"{url} messages[{position}]"
        if not isinstance(message, dict):
            result.rejected.append(Rejected("bad_shape", "message is not an object", where))
            continue
        msg_id, body, created = message.get("id"), message.get("body"), message.get("created_at")
        missing = [f for f, v in (("id", msg_id), ("body", body), ("created_at", created)) if not v]
        if missing:
            result.rejected.append(Rejected("missing_field", f"message lacks {', '.join(missing)}", where))
            continue
        if isinstance(msg_id, int):
            newest = max(newest or 0, msg_id)
        user = message.get("user") if isinstance(message.get("user"), dict) else {}
        username = user.get("username")
        symbols = message.get("symbols") if isinstance(message.get("symbols"), list) else []
        result.items.append(SourceItem(
            source="stocktwits",
            source_id=str(msg_id),
            text=str(body),
            url=f"https://stocktwits.com/{username}/message/{msg_id}" if username else None,
            published_at=str(created),
            tickers=[s["symbol"] for s in symbols if isinstance(s, dict) and isinstance(s.get("symbol"), str)],
            where=where,
        ))
    return result, newest
