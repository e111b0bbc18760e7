"""finsent_alerts_suppressed_total as the service exports it: every reason declared, each held-back alert once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from alerts.engine import SUPPRESSED, RuleEngine
from alerts.rules import parse_rules
from alerts.service import INPUTS, AlertService
from finsent.schemas import Aggregate
from finsent.settings import Settings

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)


def aggregate(start: datetime, count: int) -> bytes:
    return Aggregate(ticker="AAPL", window="15m", window_start=start, window_end=start + timedelta(minutes=15),
                     count=count, counts={"negative": count, "neutral": 0, "positive": 0}, mean_score=-0.5,
                     weighted_mean_score=-0.5, sentiment_z=-9.0, updated_at=start).to_json()


def test_hits_held_back_for_min_history_are_counted_once_per_window(tmp_path):
    rules = parse_rules({"rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3, "min_count": 10}]})
    registry = CollectorRegistry()
    settings = Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr("s" * 32), window_min_baseline=3)
    service = AlertService(settings, rules, registry=registry, clock=lambda: T0)
    # What start() sets up, without Kafka or Elasticsearch (the warm-up failed: no window history).
    service.engine = RuleEngine(rules, clock=lambda: T0, stream_min_baseline=settings.window_min_baseline)
    service._topic_kinds = {settings.topic(name): name for name in INPUTS}

    def suppressed(reason: str) -> float:
        return registry.get_sample_value("finsent_alerts_suppressed_total", {"reason": reason})

    assert "history" in SUPPRESSED and all(suppressed(reason) == 0 for reason in SUPPRESSED)  # declared at 0
    for k in range(3):
        for count in (20, 30, 40):  # the stream re-sends a window on every batch
            assert service.handle(settings.topic("aggregates"), aggregate(T0 + k * timedelta(minutes=15), count)) == []
    assert suppressed("history") == 3 and suppressed("dedup") == 0


def test_the_negatives_read_back_at_a_start_span_the_longest_burst_rule(monkeypatch):
    import elasticsearch.helpers

    from alerts.service import negatives_query, read_negatives
    from finsent.schemas import ScoredDocument, Sentiment

    rules = parse_rules({"rules": [
        {"name": "fast", "kind": "negative_burst", "count": 3, "within": "10m", "min_confidence": 0.9},
        {"name": "slow", "kind": "negative_burst", "count": 9, "within": "2h"},
        {"name": "off", "kind": "negative_burst", "count": 9, "within": "1d", "min_confidence": 0.1, "enabled": False},
    ]})
    since = (T0 - timedelta(hours=2)).isoformat()
    assert negatives_query(rules, T0) == {"bool": {"filter": [
        {"term": {"sentiment.label": "negative"}},
        {"range": {"sentiment.confidence": {"gte": 0.8}}},
        {"bool": {"should": [{"range": {"published_at": {"gte": since}}}, {"range": {"ingested_at": {"gte": since}}}],
                  "minimum_should_match": 1}},
    ]}}
    assert negatives_query(parse_rules({"rules": [{"name": "d", "kind": "drift"}]}), T0) is None

    good = ScoredDocument(id="d1", source="t", text="x", tickers=["AAPL"], published_at=T0, ingested_at=T0,
                          scored_at=T0, model_version="v1",
                          sentiment=Sentiment(label="negative", score=-0.9, confidence=0.95,
                                              probabilities={"negative": 0.9, "neutral": 0.05, "positive": 0.05}))
    calls = []

    def scan(es, **kwargs):
        calls.append(kwargs)
        return iter([{"_id": "d1", "_source": good.model_dump(mode="json")}, {"_id": "bad", "_source": {"id": 1}}])

    monkeypatch.setattr(elasticsearch.helpers, "scan", scan)
    assert [d.id for d in read_negatives(object(), "finsent-docs", rules, T0)] == ["d1"]  # the invalid one skipped
    [call] = calls
    assert call["index"] == "finsent-docs" and call["query"]["query"] == negatives_query(rules, T0)
    assert call["query"]["sort"] == [{"scored_at": "asc"}] and call["preserve_order"]


def test_a_rule_that_raises_and_a_failed_delivery_pass_are_counted(tmp_path):
    # Both are logged and the engine goes on; without a count no one is paged while a rule misses every alert.
    import threading

    rules = parse_rules({"rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3}]})
    registry, letters = CollectorRegistry(), []
    settings = Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr("s" * 32))
    service = AlertService(settings, rules, registry=registry, clock=lambda: T0)
    service.engine = RuleEngine(rules, clock=lambda: T0)
    service._topic_kinds = {settings.topic(name): name for name in INPUTS}
    service._send_dead_letter = letters.append

    def errors(stage: str) -> float:
        return registry.get_sample_value("finsent_alerts_engine_errors_total", {"stage": stage})

    assert errors("rules") == errors("dispatch") == 0  # declared at 0: increase() sees the first one
    service.engine.on_aggregate = lambda agg: {}["a rule bug"]
    assert service.handle(settings.topic("aggregates"), aggregate(T0, 20)) == []
    assert errors("rules") == 1 and [letter.stage for letter in letters] == ["alerts.rules"]

    stop = threading.Event()

    def failing_pass(should_stop=None):
        stop.set()  # one pass only
        raise OSError("disk I/O error")

    service.deliver_due = failing_pass
    service._wake.set()  # the loop's wait after the failed pass returns at once
    service._dispatch_loop(stop)
    assert errors("dispatch") == 1
