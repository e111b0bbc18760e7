"""The alert engine against the real Kafka and Elasticsearch, delivering to a real local receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from alerts import signing
from alerts.receiver import WebhookReceiver
from alerts.rules import parse_rules
from alerts.service import AlertService
from finsent import clients
from finsent.schemas import Aggregate, DeadLetter, ScoredDocument, Sentiment
from tests.ports import free_port

pytestmark = pytest.mark.integration

SECRET = "integration-secret"
FINSENT = os.path.join(os.path.dirname(sys.executable), "finsent")
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


def aggregate(start=T0, z=-4.5, ticker="AAPL", count=40):
    return Aggregate(ticker=ticker, window="15m", window_start=start, window_end=start + timedelta(minutes=15),
                     count=count, counts={"negative": count - 5, "neutral": 5, "positive": 0}, mean_score=-0.6,
                     weighted_mean_score=-0.62, sentiment_z=z, volume_z=1.0, updated_at=start + timedelta(minutes=1))


def scored(i, ticker="AAPL", score=-0.8, at=T0 + timedelta(minutes=2)):
    return ScoredDocument(id=f"doc{i}", source="test", source_id=str(i), title=f"Apple warns {i}",
                          url=f"https://news.example/{i}", text="Apple cuts guidance", tickers=[ticker],
                          published_at=at, ingested_at=at, scored_at=at, model_version="v1",
                          sentiment=Sentiment(label="negative", score=score, confidence=0.9,
                                              probabilities={"negative": 0.9, "neutral": 0.1, "positive": 0.0}))


def produce(settings, topic, *records):
    """Aggregates keyed by their ticker, as the worker sends them: one ticker's windows and their updates are read
    in the order they were sent (unkeyed, they went to random partitions, and an update could be read first)."""
    producer = clients.kafka_producer(settings)
    try:
        for record in records:
            value = record if isinstance(record, bytes) else record.to_json()
            ticker = getattr(record, "ticker", None)
            producer.send(settings.topic(topic), key=ticker.encode() if ticker else None, value=value)
        producer.flush(30)
    finally:
        producer.close(10)


def rules_for(url, **hook):
    return parse_rules({
        "webhooks": {"ops": {"url": url, "timeout": 3, "backoff_initial": "1s", "backoff_max": "2s", **hook}},
        # min_history within FINSENT_WINDOW_MIN_BASELINE: the stream's z counts from the first aggregate.
        "rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3, "min_count": 10, "cooldown": "1h",
                   "min_history": 2}],
    })


@pytest.fixture
def alert_settings(bootstrapped, tmp_path):
    return bootstrapped.model_copy(update={
        "alerts_webhook_secret": SecretStr(SECRET), "alerts_offset_reset": "earliest",
        "alerts_outbox": tmp_path / "outbox.sqlite3", "state_dir": tmp_path,
    })


def replay_verdicts(settings, monkeypatch) -> list[str]:
    """What `finsent dlq replay --dry-run` would do with the letters in the DLQ."""
    from typer.testing import CliRunner

    from finsent.cli import app

    monkeypatch.setenv("FINSENT_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("FINSENT_INDEX_PREFIX", settings.index_prefix)
    result = CliRunner().invoke(app, ["dlq", "replay", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    return [orjson.loads(line)["verdict"] for line in result.stdout.splitlines()]


def poll_until(service, predicate, limit=60):
    """Consume until predicate() holds (bounded, not a timing assertion)."""
    raised = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        raised += service.poll_once(timeout_ms=500)
        if predicate(raised):
            return raised
    raise AssertionError(f"condition not met; raised so far: {raised}")


def es_alert(settings, key):
    with clients.elasticsearch(settings) as es:
        es.indices.refresh(index=settings.index("alerts"))
        return es.get(index=settings.index("alerts"), id=key)["_source"]


def topic_records(settings, topic, expected):
    consumer = clients.kafka_consumer(settings, settings.topic(topic), consumer_timeout_ms=3000)
    try:
        records = []
        deadline = time.monotonic() + 30
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records += batch
        return records
    finally:
        consumer.close()


def test_sentiment_shift_raises_one_signed_alert_and_respects_cooldown(alert_settings, monkeypatch):
    settings = alert_settings
    produce(settings, "scored", *(scored(i, score=-0.5 - i / 10) for i in range(4)))
    with WebhookReceiver(SECRET) as receiver:
        with AlertService(settings, rules_for(receiver.url), registry=CollectorRegistry()) as service:
            # The worker writes documents before the aggregates they make up; here too.
            poll_until(service, lambda _: service.engine.stats.documents == 4)
            produce(settings, "aggregates", aggregate(), b"{not json", aggregate(z=-6.0))  # + an update
            [alert] = poll_until(service, lambda raised: service.metrics.bad_records.labels("aggregates")._value.get() >= 1
                                 and len(raised) >= 1)
            # The next window, within the cooldown: no second alert.
            produce(settings, "aggregates", aggregate(start=T0 + timedelta(minutes=15), z=-8.0))
            poll_until(service, lambda _: service.metrics.suppressed.labels("cooldown")._value.get() >= 1)
            assert service.deliver_due() == 1
            assert service.sync() == 1
    assert len(receiver.received) == 1
    [got] = receiver.delivered
    assert signing.verify(SECRET, got.body, got.headers[signing.SIGNATURE_HEADER]) > 0
    body = got.json()
    assert body["rule"] == "shift" and body["ticker"] == "AAPL" and body["idempotency_key"] == alert.idempotency_key
    assert body["z"] == -4.5 and body["threshold"] == 3  # the z of the window's first figures (the update deduped)
    assert [d["id"] for d in body["documents"]] == ["doc3", "doc2", "doc1", "doc0"]
    doc = es_alert(settings, alert.idempotency_key)
    assert doc["status"] == "delivered" and doc["attempts"] == 1 and doc["delivered_at"] and doc["z"] == -4.5
    [record] = topic_records(settings, "alerts", 1)
    assert record.key == alert.idempotency_key.encode() and orjson.loads(record.value)["status"] == "delivered"
    letters = [DeadLetter.model_validate_json(r.value) for r in topic_records(settings, "dlq", 1)]
    assert letters[0].stage == "alerts.input" and letters[0].original == "{not json"
    # An alert input is the worker's output: replaying it would count it twice.
    assert replay_verdicts(settings, monkeypatch) == [
        f"not replayable: stage alerts.input from {settings.topic('aggregates')}"]


def test_the_engine_adds_z_to_an_alerts_index_made_before_it(alert_settings):
    # The mapping is strict: without z in it, every shift and spike of an upgraded engine would be refused there.
    from finsent import topology

    settings = alert_settings
    index = settings.index("alerts")
    older = {k: v for k, v in topology.MAPPINGS["alerts"].items() if k != "z"}
    with clients.elasticsearch(settings) as es:
        es.indices.delete(index=index)
        es.indices.delete_index_template(name=index)  # as an older release left them: its template shaped it
        es.indices.create(index=index, mappings={"dynamic": "strict", "properties": older})
    produce(settings, "aggregates", aggregate(z=-5.25))
    with WebhookReceiver(SECRET) as receiver:
        with AlertService(settings, rules_for(receiver.url), registry=CollectorRegistry()) as service:
            [alert] = poll_until(service, lambda raised: len(raised) >= 1)
            assert service.sync() == 1
    with clients.elasticsearch(settings) as es:
        properties = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert properties["z"] == {"type": "float"} and es_alert(settings, alert.idempotency_key)["z"] == -5.25


def test_receiver_down_then_up_across_a_restart_delivers_once(alert_settings):
    settings = alert_settings
    port = free_port()  # bound only once the first engine has run: below the range its connections draw from
    rules = rules_for(f"http://127.0.0.1:{port}/hook")
    # Documents the engine never saw on Kafka (indexed before it started): found in the docs index.
    with clients.elasticsearch(settings) as es:
        for i in range(3):
            doc = scored(i, score=-0.3 - i / 10)
            es.index(index=settings.index("docs"), id=doc.id, document=doc.model_dump(mode="json"), refresh=True)
    produce(settings, "aggregates", aggregate())
    with AlertService(settings, rules, registry=CollectorRegistry()) as first:
        [alert] = poll_until(first, lambda raised: len(raised) == 1)
        assert first.deliver_due() == 1  # refused: the receiver is down
        first.sync()
    assert es_alert(settings, alert.idempotency_key)["status"] == "pending"
    # The engine restarts (same outbox, same consumer group) and the receiver comes up.
    produce(settings, "aggregates", aggregate())  # a replayed input: same key, nothing new
    with WebhookReceiver(SECRET, port=port) as receiver:
        later = lambda: time.time() + 60  # noqa: E731 (past the backoff without sleeping)
        with AlertService(settings, rules, registry=CollectorRegistry(), wall=later) as second:
            poll_until(second, lambda _: second.metrics.suppressed.labels("dedup")._value.get() >= 1)
            assert second.deliver_due() == 1
            assert second.deliver_due() == 0
            second.sync()
    [got] = receiver.received
    assert got.verified and got.headers[signing.IDEMPOTENCY_HEADER] == alert.idempotency_key
    assert [d["id"] for d in got.json()["documents"]] == ["doc2", "doc1", "doc0"]
    assert got.headers["X-Finsent-Attempt"] == "2"
    doc = es_alert(settings, alert.idempotency_key)
    assert doc["status"] == "delivered" and doc["attempts"] == 2 and doc["last_error"] is None


def test_dead_letter_after_max_attempts(alert_settings, monkeypatch):
    settings = alert_settings
    clock = [time.time()]
    with WebhookReceiver(SECRET, status=500) as receiver:
        rules = rules_for(receiver.url, max_attempts=2)
        produce(settings, "aggregates", aggregate())
        with AlertService(settings, rules, registry=CollectorRegistry(), wall=lambda: clock[0]) as service:
            [alert] = poll_until(service, lambda raised: len(raised) == 1)
            for _ in range(3):
                service.deliver_due()
                clock[0] += 10
            service.sync()
            service._producer.flush(10)
    assert len(receiver.received) == 2
    doc = es_alert(settings, alert.idempotency_key)
    assert doc["status"] == "failed" and doc["attempts"] == 2 and "HTTP 500" in doc["last_error"]
    [letter] = [DeadLetter.model_validate_json(r.value) for r in topic_records(settings, "dlq", 1)]
    assert letter.stage == "alerts.delivery" and "webhook ops: HTTP 500" in letter.reason
    assert orjson.loads(letter.original)["idempotency_key"] == alert.idempotency_key
    # Deliveries come back with `finsent alerts retry`, not a replay.
    assert replay_verdicts(settings, monkeypatch) == ["not replayable: stage alerts.delivery with no source topic"]


def test_cli_run_delivers_and_lists(alert_settings, tmp_path):
    settings = alert_settings
    metrics_port = free_port()  # bound by the process started below (tests.ports)
    with WebhookReceiver(SECRET) as receiver:
        rules_file = tmp_path / "rules.yml"
        rules_file.write_text(
            f"webhooks:\n  ops: {{url: '{receiver.url}', format: slack}}\n"
            "rules:\n  - {name: cli-shift, kind: sentiment_shift, threshold: 3, min_count: 10, min_history: 2}\n")
        env = os.environ | {
            "FINSENT_TOPIC_PREFIX": settings.topic_prefix, "FINSENT_INDEX_PREFIX": settings.index_prefix,
            "FINSENT_ALERTS_WEBHOOK_SECRET": SECRET, "FINSENT_ALERTS_OFFSET_RESET": "earliest",
            "FINSENT_ALERTS_OUTBOX": str(tmp_path / "cli-outbox.sqlite3"),
            "FINSENT_ALERTS_METRICS_PORT": str(metrics_port),
        }
        produce(settings, "aggregates", aggregate())
        proc = subprocess.Popen([FINSENT, "alerts", "run", "--rules", str(rules_file)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while not receiver.delivered and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            # The receiver has the webhook a moment before the engine counts it as sent.
            metrics = ""
            while 'finsent_alerts_sent_total{webhook="ops"} 1.0' not in metrics and time.monotonic() < deadline:
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    [got] = receiver.delivered
    assert "blocks" in got.json() and got.json()["text"].startswith("[finsent] cli-shift · AAPL")
    assert 'finsent_alerts_sent_total{webhook="ops"} 1.0' in metrics
    listed = subprocess.run([FINSENT, "alerts", "list", "--status", "delivered", "--json"],
                            env=env, capture_output=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["rule"], r["status"]) for r in rows] == [("cli-shift", "delivered")]
    table = subprocess.run([FINSENT, "alerts", "list", "--status", "delivered"], env=env | {"COLUMNS": "80"},
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert "delivered   cli-shift   AAPL" in table.stdout  # short cells whole, in one line


def test_a_restarted_engine_reads_its_window_history_back_and_alerts_at_once(alert_settings):
    """The rule wants 5 earlier windows, more than the stream's minimum baseline: the windows indexed
    before the start count, so the first aggregate consumed can raise its alert."""
    settings = alert_settings
    rules = parse_rules({"webhooks": {"ops": {"url": "http://127.0.0.1:9/unused"}},
                         "rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3, "min_count": 10,
                                    "min_history": 5}]})
    past = [aggregate(start=T0 - k * timedelta(minutes=15), ticker="NVDA", z=None) for k in range(6, 0, -1)]
    broken = aggregate(start=T0 - timedelta(minutes=15), ticker="AMD").model_dump(mode="json") | {"mean_score": 5.0}
    with clients.elasticsearch(settings) as es:
        for agg in past:
            es.index(index=settings.index("aggregates"), id=f"{agg.ticker}-{agg.window_start:%s}",
                     document=agg.model_dump(mode="json"))
        es.index(index=settings.index("aggregates"), id="broken", document=broken, refresh="wait_for")
    with AlertService(settings, rules, registry=CollectorRegistry()) as service:
        assert service.engine.tracked_tickers == 1  # NVDA; the broken AMD aggregate was left out
        produce(settings, "aggregates", aggregate(ticker="NVDA", z=-4.5))
        [alert] = poll_until(service, lambda raised: len(raised) >= 1)
    assert (alert.ticker, alert.window_start) == ("NVDA", T0)
