"""Event schemas reject malformed records with a reason and never half-accept them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from finsent.schemas import (
    Aggregate,
    ControlMessage,
    DeadLetter,
    LabelRecord,
    RawDocument,
    RecordError,
    ScoredDocument,
    document_id,
    original_text,
    parse_record,
)

NOW = "2026-11-28T12:00:00+00:00"


def raw(**fields):
    base = {"id": "abc123", "source": "rss", "text": "Apple beats estimates", "ingested_at": NOW}
    return base | fields


def scored(**fields):
    return raw() | {
        "scored_at": NOW,
        "model_version": "v1",
        "sentiment": {
            "label": "positive",
            "score": 0.8,
            "probabilities": {"negative": 0.05, "neutral": 0.1, "positive": 0.85},
            "confidence": 0.85,
        },
    } | fields


def test_valid_raw_document_round_trips():
    doc = parse_record(RawDocument, orjson.dumps(raw(tickers=["AAPL", "BRK.B"])))
    again = parse_record(RawDocument, doc.to_json())
    assert again == doc
    assert again.ingested_at.tzinfo is not None


def test_times_are_normalised_to_utc():
    doc = parse_record(RawDocument, raw(published_at="2026-11-28T14:00:00+02:00"))
    assert doc.published_at == datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert doc.published_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        (raw(ingested_at="2026-11-28T12:00:00"), "ingested_at"),  # no time zone
        (raw(text=""), "text"),
        (raw(text="   "), "text is blank"),
        (raw(tickers=["aapl"]), "tickers.0"),
        (raw(surprise="field"), "surprise"),
        (raw(id="has space"), "id"),
        ({"source": "rss", "text": "x", "ingested_at": NOW}, "id"),
        (raw(tickers="AAPL"), "tickers"),
    ],
)
def test_bad_raw_documents_are_rejected_with_the_field(record, fragment):
    with pytest.raises(RecordError) as info:
        parse_record(RawDocument, orjson.dumps(record))
    assert fragment in info.value.reason


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"text": "\xff\xfe"}', "not valid JSON"),
    ],
)
def test_bad_bytes_are_rejected(payload, fragment):
    with pytest.raises(RecordError, match=fragment):
        parse_record(RawDocument, payload)


def test_size_limit():
    with pytest.raises(RecordError, match="over the limit"):
        parse_record(RawDocument, orjson.dumps(raw(text="x" * 5000)), max_bytes=1000)


def test_scored_document_checks_probabilities():
    assert parse_record(ScoredDocument, scored()).sentiment.label == "positive"
    bad = scored()
    bad["sentiment"]["probabilities"] = {"negative": 0.5, "neutral": 0.5, "positive": 0.5}
    with pytest.raises(RecordError, match="sum to 1"):
        parse_record(ScoredDocument, bad)
    bad = scored()
    bad["sentiment"]["label"] = "bullish"
    with pytest.raises(RecordError, match="sentiment.label"):
        parse_record(ScoredDocument, bad)
    bad = scored()
    bad["sentiment"]["score"] = 1.5
    with pytest.raises(RecordError, match="sentiment.score"):
        parse_record(ScoredDocument, bad)


def test_aggregate_window_order():
    record = {
        "ticker": "AAPL", "window": "1m", "window_start": NOW, "window_end": NOW, "count": 1,
        "counts": {"negative": 0, "neutral": 1, "positive": 0}, "mean_score": 0.0,
        "weighted_mean_score": 0.0, "updated_at": NOW,
    }
    with pytest.raises(RecordError, match="window_end"):
        parse_record(Aggregate, record)


def test_label_and_control_messages():
    label = parse_record(LabelRecord, {"text": "Profit fell", "label": "negative", "labeled_at": NOW})
    assert label.annotator == "unknown"
    with pytest.raises(RecordError, match="label"):
        parse_record(LabelRecord, {"text": "x", "label": "bearish", "labeled_at": NOW})
    control = parse_record(ControlMessage, {"action": "promote", "model_version": "v2", "issued_at": NOW})
    assert control.action == "promote"
    with pytest.raises(RecordError, match="action"):
        parse_record(ControlMessage, {"action": "explode", "model_version": "v2", "issued_at": NOW})


def test_document_id_is_stable_and_source_scoped():
    assert document_id("reddit", "t3_abc") == document_id("reddit", "t3_abc")
    assert document_id("reddit", "t3_abc") != document_id("stocktwits", "t3_abc")
    assert document_id("rss", url="https://x.com/a") == document_id("rss2", url="https://x.com/a")
    with pytest.raises(ValueError):
        document_id("rss")
    # The ids already indexed (exactly-once indexing keys on them) do not change.
    assert document_id("reddit", "t3_abc") == "8d96f8864e4b9f541d6166baed833941"
    assert document_id("rss", url="https://x.com/a") == "d29291ddd0b93f541483f25d2eae7778"


def test_a_pushed_document_s_id_from_its_url_is_its_source_s():
    pushed = document_id("push:acme", url="https://x.com/a", url_shared=False)
    assert pushed not in {document_id("rss", url="https://x.com/a"), document_id("push:acme-eu", url="https://x.com/a",
                                                                               url_shared=False)}
    assert pushed == document_id("push:acme", url="https://x.com/a", url_shared=False)
    assert document_id("push:acme", "1", "https://x.com/a", url_shared=False) == document_id("push:acme", "1")


def test_dead_letter_keeps_every_byte():
    original = b'{"text": "caf\xe9"}'
    letter = DeadLetter(stage="validate", reason="bad utf-8", original=original_text(original),
                        failed_at=datetime.now(timezone.utc))
    assert letter.original.encode("utf-8", errors="strict").decode("unicode_escape").encode("latin-1") == original
