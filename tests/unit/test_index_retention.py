"""Index retention's settings and what it selects; the deletes themselves run against the real
Elasticsearch in tests/integration/test_index_retention.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from finsent.index_retention import aggregates_query, deletions, is_on
from finsent.settings import Settings, SettingsError, load_settings
from retrain.scheduler import RETENTION_JOB, RetrainScheduler

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("variable", ["FINSENT_DOCS_RETENTION_DAYS", "FINSENT_AGGREGATES_RETENTION_DAYS"])
def test_a_retention_under_a_day_is_refused_and_named(monkeypatch, variable):
    monkeypatch.setenv(variable, "0.5")
    with pytest.raises(SettingsError, match=variable):
        load_settings()
    monkeypatch.setenv(variable, "0")
    assert getattr(load_settings(), variable.removeprefix("FINSENT_").lower()) == 0


def test_documents_kept_less_long_than_dead_letters_are_refused(monkeypatch):
    # `finsent dlq replay` skips letters whose documents the index holds; one deleted sooner is indexed twice.
    monkeypatch.setenv("FINSENT_DOCS_RETENTION_DAYS", "7")
    with pytest.raises(SettingsError, match=r"FINSENT_DOCS_RETENTION_DAYS \(7\).*FINSENT_DLQ_RETENTION_DAYS \(30\)"):
        load_settings()
    monkeypatch.setenv("FINSENT_DLQ_RETENTION_DAYS", "7")
    assert load_settings().docs_retention_days == 7
    monkeypatch.setenv("FINSENT_DOCS_RETENTION_DAYS", "0")
    monkeypatch.setenv("FINSENT_DLQ_RETENTION_DAYS", "365")
    assert load_settings().docs_retention_days == 0  # kept for good


def test_only_indices_whose_retention_is_on_are_pruned_and_the_job_follows():
    assert [d.index for d in deletions(Settings(), NOW, {})] == ["finsent-docs", "finsent-aggregates"]
    # by when it was scored: a document replayed from the DLQ keeps its old ingested_at
    assert deletions(Settings(), NOW, {})[0].query == {"range": {"scored_at": {"lt": "2026-09-02T12:00:00+00:00"}}}
    docs_only = Settings(aggregates_retention_days=0)
    assert [d.index for d in deletions(docs_only, NOW, {})] == ["finsent-docs"]
    assert RETENTION_JOB in RetrainScheduler(docs_only)._desired()
    off = Settings(docs_retention_days=0, aggregates_retention_days=0)
    assert not is_on(off) and deletions(off, NOW, {}) == [] and RETENTION_JOB not in RetrainScheduler(off)._desired()


def test_each_window_size_keeps_the_windows_the_alert_engine_reads_back():
    cutoff = NOW - timedelta(days=7)
    query = aggregates_query({"1m": 60, "1d": 86_400}, cutoff, NOW, keep_windows=49)
    plain, daily = query["bool"]["should"]
    # 1m windows go by the cutoff; 49 daily windows reach further back, so 1d goes by its own.
    assert plain["bool"] == {"filter": [{"range": {"window_start": {"lt": cutoff.isoformat()}}}],
                             "must_not": [{"terms": {"window": ["1d"]}}]}
    assert daily["bool"]["filter"] == [{"term": {"window": "1d"}},
                                       {"range": {"window_start": {"lt": (NOW - timedelta(days=49)).isoformat()}}}]
    assert aggregates_query({"1m": 60}, cutoff, NOW, keep_windows=49)["bool"]["should"] == [
        {"bool": {"filter": [{"range": {"window_start": {"lt": cutoff.isoformat()}}}]}}]


def test_retention_never_selects_what_the_alert_engine_reads_back():
    from alerts.window_history import history_query

    now = NOW
    for window, size in {"1m": 60, "1h": 3600, "1d": 86_400, "7d": 604_800}.items():
        read_from = history_query(window, now)["bool"]["should"][0]["bool"]["filter"][1]["range"]["window_start"]["gte"]
        query = aggregates_query({window: size}, now - timedelta(days=1), now)
        deleted_before = max(c["bool"]["filter"][-1]["range"]["window_start"]["lt"] for c in query["bool"]["should"]
                             if not c["bool"].get("must_not"))
        assert deleted_before <= read_from, window  # ISO strings in UTC compare as times


def test_an_elasticsearch_that_cannot_be_reached_ends_a_run_with_the_error_not_a_crash():
    from elasticsearch import Elasticsearch

    from finsent.index_retention import apply

    with Elasticsearch("http://127.0.0.1:9", max_retries=0, request_timeout=5) as es:  # nothing listens on port 9
        outcome = apply(es, deletions(Settings(), NOW, {})[0])
    assert (outcome.deleted, outcome.ok) == (0, False) and "ConnectionError" in outcome.error
