"""A generic HTTP JSON news API: where the list of articles is and which field is which,
given as dotted paths (``data.articles``, ``meta.published``, ``symbols``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from finsent.settings import without_credentials
from ingest.items import FetchResult, Rejected, SourceItem
from ingest.sources.base import Source, get_path, load_json
from ingest.sources.http import FetchError, HttpFetcher


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="path of the body text (or summary)")
    title: str | None = None
    source_id: str | None = None
    url: str | None = None
    published_at: str | None = Field(None, description="ISO 8601 / RFC 2822 string or epoch seconds (ms if > 1e11)")
    tickers: str | None = Field(None, description="a list of symbols, a comma-separated string, or a list of "
                                                   "objects (then ticker_key names the symbol field)")
    ticker_key: str | None = None
    lang: str | None = None


class ApiSource(Source):
    def __init__(self, http: HttpFetcher, url: str, *, name: str, fields: FieldMap, items: str = "",
                 headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                 interval: float = 300.0) -> None:
        super().__init__(http, name=name, interval=interval)
        self.url = url
        self.fields = fields
        self.items_path = items
        self.headers = headers or {}
        self.params = params or {}
        self.delivered = False  # a poll of it reached Kafka: its next ones are not its backlog

    async def fetch(self) -> FetchResult:
        response = await self.http.get(self.url, headers=self.headers, params=self.params)
        shown = without_credentials(self.url)  # what messages and skipped articles' `where` quote
        result = parse_articles(load_json(response.body, shown), shown, self.name, self.fields, self.items_path)
        result.first_poll = not self.delivered

        def remember() -> None:
            self.delivered = True

        result.on_delivered = remember
        return result


def parse_articles(payload: object, url: str, source: str, fields: FieldMap, items_path: str) -> FetchResult:
    articles = get_path(payload, items_path)
    if not isinstance(articles, list):
        raise FetchError("parse", f"{url}: {items_path or 'the body'!r} is not a list of articles")
    result = FetchResult()
    for position, article in enumerate(articles):
        where = f"{url} {items_path or 'items'}[{position}]"
        if not isinstance(article, dict):
            result.rejected.append(Rejected("bad_shape", f"expected an object, got {type(article).__name__}", where))
            continue
        text = get_path(article, fields.text)
        title = get_path(article, fields.title) if fields.title else None
        if not isinstance(text, str) and not isinstance(title, str):
            result.rejected.append(Rejected("missing_field", f"no text at {fields.text!r}", where))
            continue
        published = get_path(article, fields.published_at) if fields.published_at else None
        source_id = get_path(article, fields.source_id) if fields.source_id else None
        result.items.append(SourceItem(
            source=source,
            source_id=str(source_id) if source_id is not None else None,
            title=title if isinstance(title, str) else None,
            text=text if isinstance(text, str) else None,
            url=_str(get_path(article, fields.url)) if fields.url else None,
            published_at=published,
            tickers=_tickers(get_path(article, fields.tickers), fields.ticker_key) if fields.tickers else [],
            lang=_str(get_path(article, fields.lang)) if fields.lang else None,
            where=where,
        ))
    return result


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _tickers(value: object, key: str | None) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list):
        out = []
        for entry in value:
            if isinstance(entry, dict) and key:
                entry = get_path(entry, key)
            if isinstance(entry, str):
                out.append(entry)
        return out
    return []
