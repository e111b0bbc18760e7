"""The built-in dashboard's query builders and response shaping (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboards import web_queries as q


def test_pick_interval_keeps_the_timeline_readable():
    assert q.pick_interval(timedelta(hours=1)) == ("1m", timedelta(minutes=1))
    assert q.pick_interval(timedelta(hours=24))[0] == "30m"
    assert q.pick_interval(timedelta(days=7))[0] == "3h"
    assert q.pick_interval(timedelta(days=365))[0] == "1d"  # capped at the largest
    for span in q.RANGES.values():
        _, step = q.pick_interval(span)
        assert span / step <= 60


@pytest.mark.parametrize("value, message", [("bad!", "ticker: 'bad!'"), ("", "ticker: missing")])
def test_parse_ticker_errors_name_the_parameter(value, message):
    with pytest.raises(q.BadRequest, match=message):
        q.parse_ticker(value, required=True)


def test_parse_ticker_normalises_case_and_parameters_are_checked():
    assert q.parse_ticker("brk.b") == "BRK.B"
    assert q.parse_ticker(None) is None
    with pytest.raises(q.BadRequest, match="range: '2y'"):
        q.parse_range("2y")
    for bad in ("0", "²", "9" * 5000):  # "²" passes str.isdigit(), and int() refuses it and 5,000 digits
        with pytest.raises(q.BadRequest, match="limit"):
            q.parse_limit(bad)
    assert q.parse_limit(None) == 25 and q.parse_limit("7") == 7


def test_timeline_query_filters_ticker_and_time_and_spans_the_range():
    since = datetime(2026, 1, 1, tzinfo=UTC)
    body = q.timeline_query("AAPL", since, since + timedelta(hours=24), "30m")
    filters = body["query"]["bool"]["filter"]
    assert {"term": {"tickers": "AAPL"}} in filters
    histogram = body["aggs"]["timeline"]["date_histogram"]
    assert histogram["fixed_interval"] == "30m" and histogram["min_doc_count"] == 0
    assert histogram["extended_bounds"] == {"min": "2026-01-01T00:00:00Z", "max": "2026-01-02T00:00:00Z"}


def test_parse_timeline_fills_labels_and_keeps_empty_buckets_scoreless():
    response = {"aggregations": {"timeline": {"buckets": [
        {"key_as_string": "2026-01-01T00:00:00.000Z", "doc_count": 3, "score": {"value": -0.123456},
         "labels": {"buckets": [{"key": "negative", "doc_count": 2}, {"key": "positive", "doc_count": 1}]}},
        {"key_as_string": "2026-01-01T00:30:00.000Z", "doc_count": 0, "score": {"value": None},
         "labels": {"buckets": []}},
    ]}}}
    points = q.parse_timeline(response)
    assert points[0] == {"t": "2026-01-01T00:00:00.000Z", "count": 3, "score": -0.1235,
                         "labels": {"negative": 2, "neutral": 0, "positive": 1}}
    assert points[1]["score"] is None and points[1]["count"] == 0


def test_documents_keep_text_raw_but_drop_unsafe_links_and_long_text():
    hit = {"_id": "a", "_source": {"id": "a", "title": "<script>alert(1)</script>", "text": "x" * 1000,
                                   "url": "javascript:alert(1)", "source": "rss", "tickers": ["AAPL"],
                                   "sentiment": {"label": "negative", "score": -0.5, "confidence": 0.7}}}
    [doc] = q.parse_documents({"hits": {"hits": [hit]}})
    assert doc["title"] == "<script>alert(1)</script>"  # escaping is the page's job (textContent)
    assert doc["url"] is None
    assert len(doc["text"]) == q.TEXT_PREVIEW and doc["text"].endswith("…")
    assert doc["label"] == "negative" and doc["score"] == -0.5
    assert q.safe_url("HTTPS://example.com/a") == "HTTPS://example.com/a"


def test_parse_drift_reports_the_latest_check_of_each_monitor():
    def bucket(monitor, detected):
        return {"key": monitor, "latest": {"hits": {"hits": [{"_source": {
            "monitor": monitor, "statistic": 0.3, "threshold": 0.2, "drift_detected": detected}}]}}}
    assert q.parse_drift({})["status"] == "unknown"
    ok = q.parse_drift({"aggregations": {"monitors": {"buckets": [bucket("prediction", False)]}}})
    assert ok["status"] == "ok"
    drift = q.parse_drift({"aggregations": {"monitors": {"buckets": [bucket("input", True), bucket("confidence", False)]}}})
    assert drift["status"] == "drift"
    assert [m["monitor"] for m in drift["monitors"]] == ["confidence", "input"]


def test_parse_model_without_any_model_is_empty_not_an_error():
    assert q.parse_model({}, {"hits": {"hits": []}}) == {"champion": None, "scoring": None}


def test_queries_of_growing_indices_are_bound_to_the_range_and_capped():
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    bound = {"gte": "2026-01-01T00:00:00Z", "lte": "2026-01-01T01:00:00Z"}
    for body, field in ((q.documents_query("AAPL", 25, since, until), "ingested_at"),
                        (q.documents_query(None, 25, since, until), "ingested_at"),
                        (q.scoring_model_query(since, until), "scored_at"),
                        (q.drift_query(since, until), "checked_at"),
                        (q.alerts_query(since, until), "created_at")):
        assert {"range": {field: bound}} in body["query"]["bool"]["filter"], body
        assert body["size"] <= 200
    assert {"term": {"tickers": "AAPL"}} in q.documents_query("AAPL", 25, since, until)["query"]["bool"]["filter"]
