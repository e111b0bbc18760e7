"""An alert's ``z``: the z-score a sentiment_shift or volume_spike rule compared with its threshold (None for the
other kinds), and the alerts stored or sent before the field existed, which must still load, dedupe and be sent
again with the bytes of their earlier attempts."""

from __future__ import annotations

import hashlib
import sqlite3
import statistics
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from alerts import service as service_module
from alerts.engine import RuleEngine
from alerts.outbox import Outbox
from alerts.payload import idempotency_key, json_body, slack_body
from alerts.rules import parse_rules
from alerts.service import AlertService
from finsent.schemas import Aggregate, Alert, ControlMessage, ScoredDocument, Sentiment, parse_record
from finsent.settings import Settings
from finsent.topology import MAPPINGS, index_template

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
SHIFT = {"name": "shift", "kind": "sentiment_shift", "threshold": 3, "min_count": 10, "min_history": 2}
SPIKE = {"name": "vol", "kind": "volume_spike", "threshold": 4, "min_count": 10, "min_history": 2}
# An alert as the release before ``z`` stored it in the outbox (Alert.model_dump_json), and its key.
OLD_KEY = "9efd8d3c6d430832e142fc171261e77a63d7523a"
OLD_ROW = (
    '{"idempotency_key":"9efd8d3c6d430832e142fc171261e77a63d7523a","rule":"shift","kind":"sentiment_shift",'
    '"ticker":"AAPL","window":"15m","window_start":"2025-03-03T14:00:00Z","value":-0.5,"baseline":0.1,'
    '"threshold":3.0,"message":"AAPL 15m sentiment fell (z=-4.20, threshold \u00b13)","documents":[{"id":"d1",'
    '"title":"t","url":"https://news.example/1","score":-0.9}],"dashboard_url":null,"created_at":'
    '"2025-03-03T14:00:00Z","status":"pending","attempts":0}'
)
OLD_SLACK_SHA256 = "614fa1a2caae04abdc7e9cf045238628038d3e49ed38addca4ae0dae4df46b0c"  # its Slack body then


def agg(start: datetime, *, count: int = 30, mean: float = 0.1, z: float | None = None,
        vz: float | None = None) -> Aggregate:
    return Aggregate(ticker="AAPL", window="15m", window_start=start, window_end=start + timedelta(minutes=15),
                     count=count, counts={"negative": 0, "neutral": count, "positive": 0}, mean_score=mean,
                     weighted_mean_score=mean, sentiment_z=z, volume_z=vz, updated_at=start)


def engine_with(*rules: dict) -> RuleEngine:
    return RuleEngine(parse_rules({"rules": list(rules)}), clock=lambda: T0 + timedelta(hours=2))


def test_a_shift_and_a_spike_carry_the_z_the_stream_sent():
    engine = engine_with(SHIFT, SPIKE)
    engine.warm(agg(T0 - k * timedelta(minutes=15)) for k in (3, 2, 1))
    shift, spike = engine.on_aggregate(agg(T0, mean=-0.5, z=-4.25, vz=5.5))
    assert (shift.kind, shift.z, shift.threshold) == ("sentiment_shift", -4.25, 3)
    assert (spike.kind, spike.z, spike.threshold) == ("volume_spike", 5.5, 4)
    assert "z=-4.25" in shift.message and "z=+5.50" in spike.message  # the message shows the same z


def test_without_a_stream_z_the_alert_carries_the_z_the_engine_worked_out():
    engine = engine_with(SHIFT, SPIKE)
    means, counts = [0.10, 0.12, 0.08, 0.11], [10, 12, 9, 11]
    for k, (mean, count) in enumerate(zip(means, counts, strict=True)):
        assert engine.on_aggregate(agg(T0 + k * timedelta(minutes=15), mean=mean, count=count)) == []
    shift, spike = engine.on_aggregate(agg(T0 + timedelta(hours=1), mean=-0.4, count=40))
    assert shift.z == pytest.approx((-0.4 - statistics.mean(means)) / statistics.stdev(means))
    assert spike.z == pytest.approx((40 - statistics.mean(counts)) / statistics.stdev(counts))
    assert shift.z <= -shift.threshold and spike.z >= spike.threshold  # the figures the rule compared
    assert f"z={shift.z:+.2f}" in shift.message


def test_bursts_model_and_drift_alerts_have_no_z():
    engine = engine_with({"name": "burst", "kind": "negative_burst", "count": 2, "within": "10m"},
                         {"name": "models", "kind": "model"}, {"name": "drift", "kind": "drift"})
    probs = {"negative": 0.9, "neutral": 0.05, "positive": 0.05}
    alerts = []
    for i in range(2):
        at = T0 + timedelta(hours=2, minutes=i - 5)
        alerts += engine.on_scored(ScoredDocument(
            id=f"d{i}", source="t", text="x", tickers=["AAPL"], published_at=at, ingested_at=at, scored_at=at,
            model_version="v1", sentiment=Sentiment(label="negative", score=-0.9, probabilities=probs, confidence=0.9)))
    now = T0 + timedelta(hours=2)
    alerts += engine.on_control(ControlMessage(action="promote", model_version="v2", issued_at=now))
    alerts += engine.on_control(ControlMessage(action="drift", model_version="v2", issued_at=now,
                                               details={"monitor": "input", "statistic": 0.4, "threshold": 0.2}))
    assert [(a.kind, a.z) for a in alerts] == [("negative_burst", None), ("model", None), ("drift", None)]
    assert all(b'"z":null' in json_body(a) for a in alerts)  # null in the body, not left out: set by the engine


def test_the_bodies_show_z_and_the_idempotency_key_is_the_one_the_previous_release_gave():
    engine = engine_with(SHIFT)
    engine.warm(agg(T0 - k * timedelta(minutes=15)) for k in (3, 2, 1))
    [alert] = engine.on_aggregate(agg(T0, mean=-0.5, z=-4.25))
    assert alert.idempotency_key == OLD_KEY == idempotency_key("shift", "AAPL", "15m", T0)
    body = orjson.loads(json_body(alert))
    assert body["z"] == -4.25 and body["threshold"] == 3 and "status" not in body
    [facts] = [b["fields"] for b in orjson.loads(slack_body(alert))["blocks"] if "fields" in b]
    assert {"type": "mrkdwn", "text": "*z:* -4.25"} in facts and {"type": "mrkdwn", "text": "*threshold:* 3"} in facts


def test_z_is_a_finite_number_or_none():
    fields = {"idempotency_key": "k" * 40, "rule": "r", "kind": "sentiment_shift", "message": "m", "created_at": T0}
    for bad in (float("inf"), float("nan"), "high"):
        with pytest.raises(ValidationError, match="z"):
            Alert(**fields, z=bad)
    assert Alert(**fields, z=-3.5).z == -3.5 and Alert(**fields).z is None


def test_an_alert_sent_on_the_topic_by_the_previous_release_loads():
    alert = parse_record(Alert, OLD_ROW.encode())
    assert alert.z is None and alert.idempotency_key == OLD_KEY and alert.value == -0.5


def old_outbox(path) -> None:
    """An outbox whose one row the release before ``z`` wrote (its alert JSON has no ``z``)."""
    with Outbox(path) as box:
        assert box.enqueue(Alert.model_validate_json(OLD_ROW), ["ops"], 5.0)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alerts SET alert = ? WHERE key = ?", (OLD_ROW, OLD_KEY))


def test_an_outbox_row_of_the_previous_release_loads_and_is_sent_with_the_same_bytes(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    old_outbox(path)
    old = orjson.loads(OLD_ROW)
    with Outbox(path) as box:
        [due] = box.due(10.0)
        [listed] = box.list()
        row = box.get(OLD_KEY)
    for alert in (due.alert, listed.alert, row.alert):
        assert alert.z is None and alert.idempotency_key == OLD_KEY
    # Its retries after the upgrade send the bytes of its attempts before: no "z" key, same order.
    assert json_body(due.alert) == orjson.dumps({k: v for k, v in old.items() if k not in ("status", "attempts")})
    assert hashlib.sha256(slack_body(due.alert)).hexdigest() == OLD_SLACK_SHA256
    assert row.document()["z"] is None and listed.listing()["message"] == old["message"]  # index, `alerts list`


def test_an_alert_of_the_previous_release_in_the_outbox_still_dedupes_its_window(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    old_outbox(path)
    engine = engine_with(SHIFT)
    with Outbox(path) as box:
        engine.restore(box.last_fired(), box.recent_keys())
    engine.warm(agg(T0 - k * timedelta(minutes=15)) for k in (3, 2, 1))
    assert engine.on_aggregate(agg(T0, mean=-0.5, z=-4.25)) == [] and engine.stats.deduplicated == 1


def test_the_alerts_mapping_has_z_and_the_engine_adds_it_to_a_live_index_at_its_start(tmp_path, monkeypatch):
    assert MAPPINGS["alerts"]["z"] == {"type": "float"}
    settings = Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr("s" * 32))
    assert index_template(settings, "alerts")["template"]["mappings"]["properties"]["z"] == {"type": "float"}

    class Indices:
        mappings: list[dict] = []

        def put_index_template(self, **kwargs) -> None:
            pass

        def exists(self, index: str) -> bool:
            return True  # created by the previous release, without z

        def put_mapping(self, index: str, properties: dict) -> None:
            self.mappings.append({"index": index, **properties})

    class Client:
        indices = Indices()

        def close(self, *args, **kwargs) -> None:
            pass

        flush = close

    monkeypatch.setattr(service_module.clients, "elasticsearch", lambda settings: Client())
    monkeypatch.setattr(service_module.clients, "kafka_producer", lambda settings: Client())
    monkeypatch.setattr(service_module.clients, "kafka_consumer", lambda settings, *topics, **kw: Client())
    rules = parse_rules({"rules": [SHIFT], "webhooks": {"ops": {"url": "http://127.0.0.1:9/hook"}}})
    with AlertService(settings, rules, registry=CollectorRegistry(), clock=lambda: T0):
        pass
    [mapping] = Indices.mappings
    assert mapping["index"] == settings.index("alerts") and mapping["z"] == {"type": "float"}
