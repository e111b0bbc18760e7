"""Index retention against the real Elasticsearch: what is older goes, the alert engine's windows stay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from elasticsearch import helpers
from typer.testing import CliRunner

from finsent import clients, index_retention
from alerts.window_history import read_history
from finsent.schemas import Aggregate, ScoredDocument, Sentiment
from retrain.scheduler import RETENTION_JOB, RetrainScheduler, retention_job

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


def doc(name: str, scored_days_ago: float, ingested_days_ago: float | None = None) -> dict:
    scored = NOW - scored_days_ago * DAY
    ingested = scored if ingested_days_ago is None else NOW - ingested_days_ago * DAY
    return ScoredDocument(
        id=name, source="test", source_id=name, text=f"Apple cuts guidance ({name})", tickers=["AAPL"],
        published_at=ingested, ingested_at=ingested, scored_at=scored, model_version="v1",
        sentiment=Sentiment(label="negative", score=-0.8, confidence=0.9,
                            probabilities={"negative": 0.85, "neutral": 0.1, "positive": 0.05}),
    ).model_dump(mode="json")


def aggregate(window: str, size: timedelta, started_days_ago: float) -> dict:
    start = NOW - started_days_ago * DAY
    return Aggregate(ticker="AAPL", window=window, window_start=start, window_end=start + size, count=3,
                     counts={"negative": 3, "neutral": 0, "positive": 0}, mean_score=-0.8, weighted_mean_score=-0.8,
                     updated_at=start + size).model_dump(mode="json")


DOCS = {
    "old": doc("old", 31),
    "ancient": doc("ancient", 400),
    "replayed": doc("replayed", 0.1, ingested_days_ago=40),  # from the DLQ: ingested long ago, scored just now
    "recent": doc("recent", 0.1),
}
AGGREGATES = {
    "1m-old": aggregate("1m", timedelta(minutes=1), 31),
    "1m-recent": aggregate("1m", timedelta(minutes=1), 29),
    "1d-45": aggregate("1d", DAY, 45),  # beyond the retention, but one of the 49 latest daily windows
    "1d-50": aggregate("1d", DAY, 50),
    "7d-old": aggregate("7d", 7 * DAY, 31),  # a size this process's FINSENT_WINDOWS lacks: the index has it
    "7d-350": aggregate("7d", 7 * DAY, 350),  # beyond its 49 weeks
}


def index_all(settings) -> None:
    actions = [{"_index": settings.index("docs"), "_id": k, "_source": v} for k, v in DOCS.items()]
    actions += [{"_index": settings.index("aggregates"), "_id": k, "_source": v} for k, v in AGGREGATES.items()]
    with clients.elasticsearch(settings) as es:
        helpers.bulk(es, actions, refresh="wait_for")


def remaining(settings) -> tuple[set[str], set[str]]:
    with clients.elasticsearch(settings) as es:
        es.indices.refresh(index=f"{settings.index_prefix}-*")
        return tuple({h["_id"] for h in es.search(index=settings.index(name), size=100)["hits"]["hits"]}
                     for name in ("docs", "aggregates"))


@pytest.fixture
def retention_settings(bootstrapped, tmp_path):
    return bootstrapped.model_copy(update={"docs_retention_days": 30.0, "aggregates_retention_days": 30.0,
                                           "windows": "1m", "state_dir": tmp_path / "state"})


def test_retention_deletes_what_is_older_and_keeps_the_alert_engines_windows(retention_settings):
    settings = retention_settings
    index_all(settings)
    with clients.elasticsearch(settings) as es:
        read_back = {a.window_start for a in read_history(es, settings.index("aggregates"), "1m,1d,7d", NOW)}
        dry = index_retention.run(es, settings, NOW, dry_run=True)
    assert [(o.deletion.index, o.matched, o.deleted) for o in dry] == [
        (settings.index("docs"), 2, 0), (settings.index("aggregates"), 3, 0)]
    assert remaining(settings) == (set(DOCS), set(AGGREGATES))
    checks = []  # a shutdown asks to stop after the first page
    with clients.elasticsearch(settings) as es:
        stopped = index_retention.apply(es, dry[0].deletion, page=1,
                                        should_stop=lambda: checks.append(1) or len(checks) > 1)
    assert (stopped.matched, stopped.deleted, stopped.stopped, stopped.ok) == (2, 1, True, True)

    env = {"FINSENT_INDEX_PREFIX": settings.index_prefix, "FINSENT_ELASTICSEARCH_URL": settings.elasticsearch_url,
           "FINSENT_DOCS_RETENTION_DAYS": "30", "FINSENT_AGGREGATES_RETENTION_DAYS": "30", "FINSENT_WINDOWS": "1m"}
    from finsent.cli import app

    result = CliRunner().invoke(app, ["retention", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [(o["index"], o["matched"], o["deleted"], o["failed"]) for o in json.loads(result.stdout)] == [
        (settings.index("docs"), 1, 1, 0), (settings.index("aggregates"), 3, 3, 0)]
    assert remaining(settings) == ({"replayed", "recent"}, {"1m-recent", "1d-45", "7d-old"})
    with clients.elasticsearch(settings) as es:  # the alert engine reads back all it read before
        assert {a.window_start for a in read_history(es, settings.index("aggregates"), "1m,1d,7d", NOW)} == read_back

    again = CliRunner().invoke(app, ["retention"], env=env)
    assert again.exit_code == 0 and again.stdout.count(": 0 ") == 2, again.output
    off = CliRunner().invoke(app, ["retention"], env=env | {"FINSENT_DOCS_RETENTION_DAYS": "0",
                                                             "FINSENT_AGGREGATES_RETENTION_DAYS": "0"})
    assert off.exit_code == 0 and "retention is off" in off.stdout


def test_the_scheduler_runs_retention_hourly_and_counts_what_it_deleted(retention_settings):
    settings = retention_settings
    index_all(settings)
    sched = RetrainScheduler(settings).start()
    try:
        assert sched.jobs()[RETENTION_JOB]["trigger"] == "interval[1:00:00]"
        retention_job(sched.key)  # what the hourly trigger calls
        registry = sched.ctx.metrics.registry
        deleted = {name: registry.get_sample_value("finsent_retention_deleted_total", {"index": settings.index(name)})
                   for name in ("docs", "aggregates")}
        runs = registry.get_sample_value("finsent_retention_runs_total", {"outcome": "ok"})
    finally:
        sched.shutdown()
    assert deleted == {"docs": 2, "aggregates": 3} and runs == 1
    assert remaining(settings) == ({"replayed", "recent"}, {"1m-recent", "1d-45", "7d-old"})
    off = RetrainScheduler(settings.model_copy(update={"docs_retention_days": 0.0,
                                                       "aggregates_retention_days": 0.0})).start()
    try:
        assert RETENTION_JOB not in off.jobs()  # the stored job is removed with its setting
    finally:
        off.shutdown()


def test_a_blocked_index_is_reported_not_retried_for_ever(retention_settings):
    """Elasticsearch's flood-stage block refuses deletes too: each is counted as failed, and the run
    stops after the page that deleted nothing instead of fetching the same page again."""
    settings = retention_settings
    index_all(settings)
    with clients.elasticsearch(settings) as es:
        es.indices.put_settings(index=settings.index("docs"), settings={"index.blocks.read_only_allow_delete": True})
        try:
            [docs, aggregates] = index_retention.run(es, settings, NOW)
        finally:
            es.indices.put_settings(index=settings.index("docs"),
                                    settings={"index.blocks.read_only_allow_delete": None})
    assert (docs.matched, docs.deleted, docs.failed, docs.ok) == (2, 0, 2, False)
    assert "429" in docs.errors[0] and "read-only-allow-delete" in docs.errors[0]
    assert (aggregates.deleted, aggregates.ok) == (3, True)  # the other index is pruned all the same
