"""``sources.yml``: many sources in one file, validated with pydantic before anything starts.

```yaml
sources:
  - type: rss
    urls: [https://example.com/markets.xml]
    interval: 300
  - type: api
    name: mynews
    url: https://news.example.com/v1/latest
    headers: {Authorization: "Bearer ${NEWS_TOKEN}"}   # ${VAR}, ${VAR:-default}: alerts.env_refs
    items: data.articles
    fields: {text: summary, title: headline, source_id: id, url: link, published_at: time, tickers: symbols}
  - type: reddit
    subreddit: stocks
  - type: stocktwits
    symbols: [AAPL, TSLA]
push: {port: 8088}            # optional: also run the push endpoint
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Mapping

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from alerts.env_refs import UnsetVariable, expand
from finsent.settings import Settings, without_credentials
from finsent.tagged_unions import union_tags
from finsent.yaml_errors import yaml_problem
from finsent.yaml_loading import load_yaml
from ingest.sources.api import ApiSource, FieldMap
from ingest.sources.base import Source
from ingest.sources.http import HttpFetcher, url_problem
from ingest.sources.reddit import RedditSource
from ingest.sources.rss import RssSource
from ingest.sources.stocktwits import StockTwitsSource


def _fetchable(url: str) -> str:
    if problem := url_problem(url):  # what httpx cannot read would fail every poll
        raise ValueError(problem)
    return url


MIN_INTERVAL = 0.1  # seconds, as `finsent ingest … --interval`


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):  # YAML's `true` would be 1 second
        raise ValueError("expected a number of seconds, not a boolean")
    return value


# A number of seconds (a `${VAR}` expands to text such as "30", read as one), finite (`.inf` would poll once, ever)
# and no shorter than the command line allows: `0.001` would poll a feed a thousand times a second.
Interval = Annotated[float, BeforeValidator(_not_a_boolean), Field(ge=MIN_INTERVAL, allow_inf_nan=False)]
HttpUrl = Annotated[str, AfterValidator(_fetchable)]
# What Reddit and StockTwits allow; the name goes into a URL path, so nothing else gets through.
Subreddit = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,21}$")]
Symbol = Annotated[str, Field(pattern=r"^\$?[A-Za-z0-9._^-]{1,20}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RssConfig(_Strict):
    type: Literal["rss"]
    urls: list[HttpUrl] = Field(min_length=1)
    interval: Interval | None = None
    name: str | None = None


class ApiConfig(_Strict):
    type: Literal["api"] = "api"
    name: Annotated[str, Field(min_length=1, max_length=64)]
    url: HttpUrl
    items: str = ""
    fields: FieldMap
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    interval: Interval | None = None


class RedditConfig(_Strict):
    type: Literal["reddit"]
    subreddit: Subreddit | None = None
    subreddits: list[Subreddit] = Field(default_factory=list)
    interval: Interval | None = None

    @model_validator(mode="after")
    def _some(self) -> RedditConfig:  # an entry that builds no source would run, doing nothing
        if self.subreddit is None and not self.subreddits:
            raise ValueError("no subreddit: give subreddit or subreddits")
        return self


class StockTwitsConfig(_Strict):
    type: Literal["stocktwits"]
    symbol: Symbol | None = None
    symbols: list[Symbol] = Field(default_factory=list)
    interval: Interval | None = None

    @model_validator(mode="after")
    def _some(self) -> StockTwitsConfig:
        if self.symbol is None and not self.symbols:
            raise ValueError("no symbol: give symbol or symbols")
        return self


class PushConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8088, ge=1, le=65535)


SourceConfig = Annotated[RssConfig | ApiConfig | RedditConfig | StockTwitsConfig, Field(discriminator="type")]


class SourcesFile(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list)
    push: PushConfig | None = None


def _load_yaml(path: Path, environ: Mapping[str, str] | None = None) -> object:
    """The parsed file, its values' ``${NAME}`` references read from ``environ`` (default: this process's
    environment) after parsing, so a value cannot change the file's structure; no error quotes the file."""
    try:
        raw = load_yaml(path.read_text("utf-8"))  # a second `sources:` or field is refused, not kept
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the file: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    try:
        return expand(raw, os.environ if environ is None else environ)
    except UnsetVariable as exc:
        raise ValueError(f"{path}: {exc}") from None


SOURCE_TYPES = union_tags(SourceConfig)


def _problem(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "union_tag_not_found":  # pydantic says "Unable to extract tag using discriminator 'type'"
        return f"{where}: no type; say which kind of source it is ({', '.join(SOURCE_TYPES)})"
    return f"{where}: {error['msg']}"


def _validated(model: type[BaseModel], data: object, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: {'; '.join(_problem(e) for e in exc.errors())}") from None


def load_sources_file(path: Path) -> SourcesFile:
    """The validated file; ValueError naming the file and each bad field."""
    return _validated(SourcesFile, _load_yaml(path) or {}, path)


def load_api_config(path: Path) -> ApiConfig:
    """One API source (``finsent ingest api --config F``): the ``api`` entry without ``type``."""
    return _validated(ApiConfig, _load_yaml(path) or {}, path)


def build_sources(config: SourcesFile, http: HttpFetcher, settings: Settings) -> list[Source]:
    default = settings.ingest_poll_interval
    sources: list[Source] = []
    for entry in config.sources:
        interval = entry.interval or default
        if isinstance(entry, RssConfig):
            sources += [RssSource(http, url, name=entry.name if len(entry.urls) == 1 else None, interval=interval)
                        for url in entry.urls]
        elif isinstance(entry, ApiConfig):
            sources.append(api_source(entry, http, settings))
        elif isinstance(entry, RedditConfig):
            for sub in [*([entry.subreddit] if entry.subreddit else []), *entry.subreddits]:
                sources.append(RedditSource(http, sub, base_url=settings.reddit_base_url, interval=interval))
        elif isinstance(entry, StockTwitsConfig):
            for symbol in [*([entry.symbol] if entry.symbol else []), *entry.symbols]:
                sources.append(StockTwitsSource(http, symbol, base_url=settings.stocktwits_base_url, interval=interval))
    _check_names(sources)
    return sources


def _check_names(sources: list[Source]) -> None:
    """A name labels a source's metrics and logs (and its documents' ids): two sources under one name would read
    as one, a failing feed hidden by a healthy one (two feeds of one host are both ``rss:<host>``)."""
    by_name: dict[str, list[Source]] = {}
    for source in sources:
        by_name.setdefault(source.name.lower(), []).append(source)
    clashes = [f"{len(same)} sources are named {same[0].name!r} ({', '.join(_where(s) for s in same)})"
               for same in by_name.values() if len(same) > 1]
    if clashes:
        raise ValueError("; ".join(clashes) + ": each source needs a name of its own (an rss entry with one URL may "
                         "set `name`)")


def _where(source: Source) -> str:
    url = getattr(source, "url", None)
    return without_credentials(url) if url else getattr(source, "subreddit", None) or getattr(source, "symbol", "")


def api_source(entry: ApiConfig, http: HttpFetcher, settings: Settings) -> ApiSource:
    return ApiSource(http, entry.url, name=f"api:{entry.name}"[:64], fields=entry.fields, items=entry.items,
                     headers=entry.headers, params=entry.params, interval=entry.interval or settings.ingest_poll_interval)
