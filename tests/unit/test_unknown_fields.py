"""Readers of what another finsent process wrote ignore the fields they do not know (a newer release's: a rolling
upgrade in any order, a rollback), and still refuse a known field that is wrong; what comes from outside finsent,
and what a process builds itself, stays strict."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from alerts.engine import RuleEngine
from alerts.outbox import Outbox
from alerts.rules import parse_rules
from alerts.service import INPUTS, AlertService, read_negatives
from alerts.window_history import read_history
from finsent import schemas
from finsent.dead_letters import read_letter
from finsent.schemas import (
    Aggregate,
    Alert,
    ControlMessage,
    DeadLetter,
    LabelRecord,
    RawDocument,
    RecordError,
    ScoredDocument,
    parse_record,
)
from finsent.settings import Settings
from retrain.label_indexer import LabelIndexer
from retrain.label_store import fetch_labels
from stream.control import ControlListener
from stream.validation import parse_raw
from stream.windows import TickerWindows, WindowEvent, WindowStats

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
NOW = "2025-03-03T14:00:00Z"
RAW = {"id": "d1", "source": "rss", "text": "Apple beats estimates", "tickers": ["AAPL"], "ingested_at": NOW}
SCORED = RAW | {"scored_at": NOW, "model_version": "v1", "sentiment": {
    "label": "negative", "score": -0.9, "probabilities": {"negative": 0.95, "neutral": 0.05, "positive": 0.0},
    "confidence": 0.95}}
AGGREGATE = {"ticker": "AAPL", "window": "15m", "window_start": NOW, "window_end": "2025-03-03T14:15:00Z",
             "count": 3, "counts": {"negative": 3, "neutral": 0, "positive": 0}, "mean_score": -0.5,
             "weighted_mean_score": -0.5, "updated_at": NOW}
ALERT = {"idempotency_key": "k" * 40, "rule": "shift", "kind": "sentiment_shift", "ticker": "AAPL", "window": "15m",
         "window_start": NOW, "value": -0.5, "threshold": 3.0, "z": -4.2, "message": "AAPL fell",
         "documents": [{"id": "d1", "score": -0.9}], "created_at": NOW}
LABEL = {"text": "Profit fell", "label": "negative", "labeled_at": NOW}
CONTROL = {"action": "promote", "model_version": "v20250303-140000-abcd", "issued_at": NOW}
LETTER = {"stage": "validate", "reason": "bad", "original": "{}", "failed_at": NOW}
# What a newer release may add: a field at the top and one in a nested record.
NEWER = {"confidence_band": [0.1, 0.2]}


@pytest.fixture(autouse=True)
def _fresh_names(monkeypatch):
    monkeypatch.setattr(schemas, "_named", set(), raising=False)  # each test sees its own first warnings


@pytest.mark.parametrize(("model", "record"), [
    (RawDocument, RAW), (ScoredDocument, SCORED), (Aggregate, AGGREGATE), (Alert, ALERT), (LabelRecord, LABEL),
    (ControlMessage, CONTROL), (DeadLetter, LETTER),
], ids=lambda v: getattr(v, "__name__", ""))
def test_a_record_with_a_newer_field_loads_for_a_reader_and_is_refused_at_the_edge(model, record):
    newer = orjson.dumps(record | NEWER)
    assert parse_record(model, newer, ignore_unknown=True) == parse_record(model, orjson.dumps(record))
    with pytest.raises(RecordError, match="confidence_band: Extra inputs are not permitted"):
        parse_record(model, newer)  # the default: input from outside finsent, and what finsent builds


def test_a_newer_field_in_a_nested_record_is_dropped_too():
    newer = SCORED | {"sentiment": SCORED["sentiment"] | {"calibrated": True}}
    assert parse_record(ScoredDocument, newer, ignore_unknown=True).sentiment.label == "negative"
    alert = ALERT | {"documents": [{"id": "d1", "score": -0.9, "rank": 1}]}
    assert parse_record(Alert, alert, ignore_unknown=True).documents[0].id == "d1"
    with pytest.raises(ValidationError, match="rank"):
        Alert(**alert)  # built in code: strict


@pytest.mark.parametrize(("model", "record", "field"), [
    (RawDocument, RAW | {"tickers": "AAPL"}, "tickers"),
    (ScoredDocument, SCORED | {"sentiment": SCORED["sentiment"] | {"score": "high", "new": 1}}, "sentiment.score"),
    (Alert, ALERT | {"z": "big"}, "z"),
    (Alert, ALERT | {"documents": [{"id": "d1", "score": "low", "rank": 1}]}, "documents.0.score"),
    (ControlMessage, CONTROL | {"action": "explode"}, "action"),
    (LabelRecord, {"text": "x", "labeled_at": NOW, "new": 1}, "label"),  # a missing field stays missing
], ids=["raw", "nested", "alert-z", "alert-document", "control-action", "label-missing"])
def test_a_known_field_that_is_wrong_is_still_refused_naming_it(model, record, field):
    with pytest.raises(RecordError) as info:
        parse_record(model, record | NEWER, ignore_unknown=True)
    reason = info.value.reason
    assert reason.startswith(f"invalid {model.__name__}: {field}: ") and "; " not in reason, reason  # that field only


def test_each_unknown_field_is_named_once_per_process(caplog):
    with caplog.at_level(logging.WARNING, logger="finsent.schemas"):
        for _ in range(3):
            parse_record(Aggregate, AGGREGATE | NEWER, ignore_unknown=True)
        parse_record(Aggregate, AGGREGATE | NEWER | {"skew": 1}, ignore_unknown=True)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Aggregate records carry fields this release does not know, ignored: "
                                  "'confidence_band' (written by a newer finsent")
    assert "ignored: 'skew' (" in warnings[1]


def test_the_names_kept_are_bounded(caplog):
    with caplog.at_level(logging.WARNING, logger="finsent.schemas"):
        parse_record(LabelRecord, LABEL | {f"many{n}": 1 for n in range(30)}, ignore_unknown=True)
        for n in range(schemas._MAX_NAMED + 50):
            parse_record(LabelRecord, LABEL | {f"field{n}": 1, "x" * 10_000: 2}, ignore_unknown=True)
    assert len(schemas._named) == schemas._MAX_NAMED
    assert caplog.records[0].getMessage().count("'many") == 20  # the other 10 wait for their next sighting
    assert max(len(record.getMessage()) for record in caplog.records) < 1000  # a long name is cut
    assert caplog.records[-1].getMessage().endswith("further unknown fields are not named")


# --- the read paths ----------------------------------------------------------------------------------------------
def test_the_worker_scores_a_raw_record_a_newer_ingest_wrote():
    assert parse_raw(orjson.dumps(RAW | NEWER), 100_000, now=T0).id == "d1"
    with pytest.raises(RecordError, match="tickers"):
        parse_raw(orjson.dumps(RAW | NEWER | {"tickers": "AAPL"}), 100_000, now=T0)


def test_the_alert_engine_reads_a_newer_workers_aggregates_and_documents(tmp_path):
    rules = parse_rules({"rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3, "min_count": 1}]})
    registry = CollectorRegistry()
    settings = Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr("s" * 32))
    service = AlertService(settings, rules, registry=registry, clock=lambda: T0)
    service.engine = RuleEngine(rules, clock=lambda: T0)  # what start() sets up, without Kafka or Elasticsearch
    service._topic_kinds = {settings.topic(name): name for name in INPUTS}
    letters = []
    service._send_dead_letter = letters.append
    service.handle(settings.topic("aggregates"), orjson.dumps(AGGREGATE | NEWER))
    service.handle(settings.topic("scored"), orjson.dumps(SCORED | NEWER))
    service.handle(settings.topic("control"), orjson.dumps(CONTROL | NEWER))
    assert letters == [] and service.engine.tracked_tickers == 1
    service.handle(settings.topic("aggregates"), orjson.dumps(AGGREGATE | NEWER | {"count": -1}))
    assert [letter.reason.split(": ")[1] for letter in letters] == ["count"]


def test_the_alert_engine_warms_up_from_documents_a_newer_release_indexed(monkeypatch):
    hits = [{"_id": "a", "_source": AGGREGATE | NEWER}, {"_id": "b", "_source": AGGREGATE | {"count": "many"}}]
    monkeypatch.setattr("elasticsearch.helpers.scan", lambda *a, **k: iter(hits))
    assert [agg.ticker for agg in read_history(None, "aggs", "15m", T0 + timedelta(hours=1))] == ["AAPL"]
    hits = [{"_id": "d1", "_source": SCORED | NEWER}]
    rules = parse_rules({"rules": [{"name": "burst", "kind": "negative_burst", "count": 3, "within": "1h"}]})
    assert [doc.id for doc in read_negatives(None, "docs", rules, T0)] == ["d1"]


def test_an_outbox_row_a_newer_release_wrote_loads_after_a_rollback(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    alert = Alert.model_validate(ALERT)
    with Outbox(path) as box:
        assert box.enqueue(alert, ["ops"], 5.0)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alerts SET alert = ?", (orjson.dumps(ALERT | NEWER | {"documents": [
            {"id": "d1", "score": -0.9, "rank": 1}]}).decode(),))
    with Outbox(path) as box:
        [due] = box.due(10.0)
        [listed] = box.list()
        assert due.alert == listed.alert == box.get(alert.idempotency_key).alert == alert
        assert "confidence_band" not in listed.document()  # the strict alerts mapping would refuse it
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE alerts SET alert = ?", (orjson.dumps(ALERT | NEWER | {"kind": "storm"}).decode(),))
        # A new value of a known field is still refused: listed with the reason (alerts.outbox gives it up in a pass).
        [refused] = box.list()
        assert "kind: Input should be" in refused.reason and refused.listing()["status"] == "pending"


def test_the_label_indexer_and_store_read_labels_a_newer_release_wrote(tmp_path, monkeypatch):
    settings = Settings(state_dir=tmp_path)
    indexed = []
    monkeypatch.setattr("retrain.label_indexer.index_labels",
                        lambda es, settings, records, **kw: indexed.extend(records) or SimpleNamespace(
                            indexed=len(records), failed=[]))
    sent = []
    indexer = LabelIndexer(settings)
    indexer._producer = SimpleNamespace(send=lambda topic, value: sent.append(value), flush=lambda timeout: None)
    message = SimpleNamespace(value=orjson.dumps(LABEL | NEWER), topic="labels", partition=0, offset=1)
    indexer._handle([message])
    assert [label.text for label in indexed] == ["Profit fell"] and sent == []
    hits = [{"_id": "l1", "_source": LABEL | {"indexed_at": NOW} | NEWER}]
    monkeypatch.setattr("retrain.label_store.helpers.scan", lambda *a, **k: iter(hits))
    assert [label.indexed_at for label in fetch_labels(None, settings)] == [T0]


def test_finsent_dlq_reads_a_letter_a_newer_release_wrote():
    assert read_letter(0, 1, None, orjson.dumps(LETTER | NEWER)).letter.stage == "validate"


def test_a_worker_follows_a_promotion_a_newer_release_sent(tmp_path):
    class Consumer:
        def __aiter__(self):
            return self._records()

        async def _records(self):
            for value in (orjson.dumps(CONTROL | NEWER), orjson.dumps(CONTROL | {"action": "explode"})):
                yield SimpleNamespace(value=value, offset=0)

    asked = []
    listener = ControlListener(Settings(state_dir=tmp_path), lambda ref, message: asked.append(ref))
    listener._consumer = Consumer()
    asyncio.run(listener._run())
    assert asked == [CONTROL["model_version"]]


def test_window_state_a_newer_worker_wrote_is_restored():
    sizes = {"15m": 900}
    windows = TickerWindows("AAPL", sizes)
    windows.add(WindowEvent("AAPL", "d1", T0, "negative", -0.9, 0.95, raw_partition=0, raw_offset=7))
    state = windows.to_state()
    newer = state | {"skew": 1, "series": {"15m": state["series"]["15m"] | {"late": 2}}}
    newer["series"]["15m"]["w"] = {start: figures + [0.25] for start, figures in state["series"]["15m"]["w"].items()}
    assert TickerWindows.from_state("AAPL", sizes, newer).to_state() == state
    stats = WindowStats.from_state([2, [1, 1, 0], -0.5, -0.4, 1.5, 0.25])  # a sixth figure
    assert (stats.count, stats.counts["negative"], stats.confidence_sum) == (2, 1, 1.5)
    with pytest.raises(ValueError):
        WindowStats.from_state([2, [1, 1, 0], -0.5])

