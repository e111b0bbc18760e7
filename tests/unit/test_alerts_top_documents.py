"""The top documents a sentiment shift looks up in the docs index when the engine kept none (after a restart):
taken from the end of the score range its z-score moved to, whatever its mean score and baseline say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from alerts.engine import RuleEngine
from alerts.rules import parse_rules
from alerts.service import INPUTS, AlertService
from finsent.schemas import Aggregate
from finsent.settings import Settings

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)


class Docs:
    def __init__(self) -> None:
        self.orders: list[str] = []

    def search(self, **query) -> dict:
        self.orders.append(query["sort"][0]["sentiment.score"]["order"])
        return {"hits": {"hits": [{"_id": "d1", "_source": {"id": "d1", "title": "t", "sentiment": {"score": 0.1}}}]}}


def test_a_shift_with_no_baseline_of_the_engines_own_shows_the_documents_of_its_direction(tmp_path):
    rules = parse_rules({"rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3, "min_count": 1,
                                    "top_documents": 3}]})
    settings = Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr("s" * 32), window_min_baseline=5)
    now = T0 + timedelta(minutes=15)
    service = AlertService(settings, rules, registry=CollectorRegistry(), clock=lambda: now)
    # What start() sets up, without Kafka or Elasticsearch: a fresh engine, so no baseline and no documents.
    service.engine = RuleEngine(rules, clock=lambda: now, stream_min_baseline=5)
    service._topic_kinds = {settings.topic(name): name for name in INPUTS}
    service._es = Docs()
    for ticker, mean, z in (("AAPL", 0.2, -4.0), ("MSFT", -0.3, 4.0)):  # a fall to +0.2, a rise to -0.3
        agg = Aggregate(ticker=ticker, window="15m", window_start=T0, window_end=now, count=20,
                        counts={"negative": 10, "neutral": 0, "positive": 10}, mean_score=mean,
                        weighted_mean_score=mean, sentiment_z=z, updated_at=now)
        [alert] = service.handle(settings.topic("aggregates"), agg.to_json())
        assert alert.baseline is None and alert.documents == []
        assert [d.id for d in service._enrich(alert).documents] == ["d1"]
    assert service._es.orders == ["asc", "desc"]  # most negative first for the fall, most positive for the rise
