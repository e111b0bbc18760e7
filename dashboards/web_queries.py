"""Elasticsearch queries of the built-in dashboard, and the shaping of their answers.

Pure functions: a request body in, plain JSON-ready dicts out, so the page's API is tested
without a server and the aiohttp handlers stay thin. Times on the axis are ``ingested_at``
(every document has it; ``published_at`` is optional). Every search of a growing index is bound
to the chosen range and has a size cap, so a large index is never scanned whole; only the
champion lookup in the small model registry is not.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

from finsent.schemas import LABELS

RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24),
    "7d": timedelta(days=7), "30d": timedelta(days=30),
}
DEFAULT_RANGE = "24h"
# Fixed intervals the timeline may use, smallest first (Elasticsearch fixed_interval syntax).
INTERVALS: list[tuple[str, timedelta]] = [
    ("1m", timedelta(minutes=1)), ("5m", timedelta(minutes=5)), ("15m", timedelta(minutes=15)),
    ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)), ("3h", timedelta(hours=3)),
    ("6h", timedelta(hours=6)), ("12h", timedelta(hours=12)), ("1d", timedelta(days=1)),
]
TICKER = re.compile(r"^[A-Z][A-Z0-9]{0,9}([.\-][A-Z0-9]{1,4})?$")
TEXT_PREVIEW = 280
_DOC_FIELDS = ["id", "title", "text", "url", "source", "tickers", "published_at", "ingested_at",
               "sentiment.label", "sentiment.score", "sentiment.confidence", "model_version"]


class BadRequest(ValueError):
    """A query parameter is wrong; the message names it."""


def parse_range(value: str | None) -> tuple[str, timedelta]:
    name = value or DEFAULT_RANGE
    if name not in RANGES:
        raise BadRequest(f"range: {name!r} is not one of {', '.join(RANGES)}")
    return name, RANGES[name]


def parse_ticker(value: str | None, *, required: bool = False) -> str | None:
    if not value:
        if required:
            raise BadRequest("ticker: missing")
        return None
    ticker = value.strip().upper()
    if not value.isascii() or not TICKER.match(ticker):  # "ß".upper() is "SS"
        raise BadRequest(f"ticker: {value[:20]!r} is not a ticker symbol")
    return ticker


def parse_limit(value: str | None, default: int = 25, maximum: int = 200) -> int:
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= maximum:  # isdigit() takes "²"
        raise BadRequest(f"limit: {value[:20]!r} is not a number from 1 to {maximum}")
    return int(value)


def pick_interval(span: timedelta, max_buckets: int = 60) -> tuple[str, timedelta]:
    """The smallest fixed interval that keeps the timeline within ``max_buckets`` bars."""
    for name, step in INTERVALS:
        if span / step <= max_buckets:
            return name, step
    return INTERVALS[-1]


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _time_filter(field: str, since: datetime, until: datetime) -> dict[str, Any]:
    return {"range": {field: {"gte": _iso(since), "lte": _iso(until)}}}


def timeline_query(ticker: str, since: datetime, until: datetime, interval: str) -> dict[str, Any]:
    return {
        "size": 0,
        "query": {"bool": {"filter": [{"term": {"tickers": ticker}}, _time_filter("ingested_at", since, until)]}},
        "aggs": {"timeline": {
            "date_histogram": {"field": "ingested_at", "fixed_interval": interval, "min_doc_count": 0,
                               "extended_bounds": {"min": _iso(since), "max": _iso(until)}},
            "aggs": {"score": {"avg": {"field": "sentiment.score"}},
                     "labels": {"terms": {"field": "sentiment.label", "size": len(LABELS)}}},
        }},
    }


def parse_timeline(response: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per interval: start time, volume, volume per label, mean score (None when empty)."""
    points = []
    for bucket in response.get("aggregations", {}).get("timeline", {}).get("buckets", []):
        labels = {label: 0 for label in LABELS}
        for sub in bucket["labels"]["buckets"]:
            if sub["key"] in labels:
                labels[sub["key"]] = sub["doc_count"]
        score = bucket["score"]["value"]
        points.append({"t": bucket["key_as_string"], "count": bucket["doc_count"], "labels": labels,
                       "score": None if score is None or math.isnan(score) else round(score, 4)})
    return points


def tickers_query(since: datetime, until: datetime, size: int = 50) -> dict[str, Any]:
    return {"size": 0, "query": {"bool": {"filter": [_time_filter("ingested_at", since, until)]}},
            "aggs": {"tickers": {"terms": {"field": "tickers", "size": size}}}}


def parse_tickers(response: dict[str, Any]) -> list[dict[str, Any]]:
    buckets = response.get("aggregations", {}).get("tickers", {}).get("buckets", [])
    return [{"ticker": b["key"], "count": b["doc_count"]} for b in buckets]


def documents_query(ticker: str | None, limit: int, since: datetime, until: datetime) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [_time_filter("ingested_at", since, until)]
    if ticker:
        filters.append({"term": {"tickers": ticker}})
    return {"size": limit, "query": {"bool": {"filter": filters}}, "_source": _DOC_FIELDS,
            "sort": [{"ingested_at": {"order": "desc"}}, {"id": {"order": "asc"}}]}


def parse_documents(response: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for hit in response.get("hits", {}).get("hits", []):
        src = hit.get("_source", {})
        sentiment = src.get("sentiment") or {}
        text = src.get("text") or ""
        docs.append({
            "id": src.get("id", hit.get("_id")), "title": src.get("title") or "",
            "text": text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW - 1] + "…",
            "url": safe_url(src.get("url")), "source": src.get("source") or "", "tickers": src.get("tickers") or [],
            "published_at": src.get("published_at"), "ingested_at": src.get("ingested_at"),
            "label": sentiment.get("label"), "score": sentiment.get("score"),
            "confidence": sentiment.get("confidence"), "model_version": src.get("model_version"),
        })
    return docs


def safe_url(url: str | None) -> str | None:
    """Only http(s) links reach the page: a ``javascript:`` URL in a feed must not become a link."""
    if not url or not re.match(r"^https?://", url, re.IGNORECASE):
        return None
    return url


def alerts_query(since: datetime, until: datetime, size: int = 20) -> dict[str, Any]:
    return {"size": size, "query": {"bool": {"filter": [_time_filter("created_at", since, until)]}},
            "_source": ["idempotency_key", "rule", "kind", "ticker", "window", "value", "baseline", "threshold",
                        "z", "message", "created_at", "status", "dashboard_url"],
            "sort": [{"created_at": {"order": "desc"}}]}


def parse_alerts(response: dict[str, Any]) -> list[dict[str, Any]]:
    alerts = []
    for hit in response.get("hits", {}).get("hits", []):
        src = dict(hit.get("_source", {}))
        src["dashboard_url"] = safe_url(src.get("dashboard_url"))
        alerts.append(src)
    return alerts


def champion_query() -> dict[str, Any]:
    # Not bound to the range: the registry holds one document per trained version, and a champion promoted
    # before the range is still the champion.
    return {"size": 1, "query": {"term": {"champion": True}},
            "sort": [{"promoted_at": {"order": "desc", "missing": "_last"}}, {"created_at": {"order": "desc"}}],
            "_source": ["version", "base_model", "created_at", "promoted_at", "status", "labels"]}


def scoring_model_query(since: datetime, until: datetime) -> dict[str, Any]:
    """The model version of the most recently scored document in the range: what the workers run now."""
    return {"size": 1, "query": {"bool": {"filter": [_time_filter("scored_at", since, until)]}},
            "_source": ["model_version", "scored_at"], "sort": [{"scored_at": {"order": "desc"}}]}


def parse_model(champion: dict[str, Any], scoring: dict[str, Any]) -> dict[str, Any]:
    champ_hits = champion.get("hits", {}).get("hits", [])
    score_hits = scoring.get("hits", {}).get("hits", [])
    return {"champion": champ_hits[0]["_source"] if champ_hits else None,
            "scoring": score_hits[0]["_source"] if score_hits else None}


def drift_query(since: datetime, until: datetime, monitors: int = 20) -> dict[str, Any]:
    """The latest check of each monitor within the range (the scheduler checks every FINSENT_DRIFT_CHECK_MINUTES)."""
    latest = {"top_hits": {"size": 1, "sort": [{"checked_at": {"order": "desc"}}],
                           "_source": ["monitor", "statistic", "threshold", "drift_detected", "checked_at",
                                       "model_version"]}}
    return {"size": 0, "query": {"bool": {"filter": [_time_filter("checked_at", since, until)]}},
            "aggs": {"monitors": {"terms": {"field": "monitor", "size": monitors}, "aggs": {"latest": latest}}}}


def parse_drift(response: dict[str, Any]) -> dict[str, Any]:
    """The latest check of each monitor, and an overall status: drift, ok, or unknown (no checks)."""
    monitors = []
    for bucket in response.get("aggregations", {}).get("monitors", {}).get("buckets", []):
        hits = bucket["latest"]["hits"]["hits"]
        if hits:
            monitors.append(hits[0]["_source"])
    monitors.sort(key=lambda m: m.get("monitor", ""))
    if not monitors:
        status = "unknown"
    else:
        status = "drift" if any(m.get("drift_detected") for m in monitors) else "ok"
    return {"status": status, "monitors": monitors}
