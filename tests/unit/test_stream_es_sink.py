"""Bulk response classification and back-off (the sink's pure parts)."""

from __future__ import annotations

import random

import pytest

from stream.es_sink import Backoff, BulkItem, classify
from stream.pipeline import text_to_score
from stream.validation import Origin, dead_letter, parse_raw
from finsent.schemas import RawDocument, RecordError, utc_now


def test_classify_splits_done_retry_and_rejected():
    items = [BulkItem(str(i), {}) for i in range(6)]
    answer = [
        {"index": {"_id": "0", "status": 201}},
        {"index": {"_id": "1", "status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        {"index": {"_id": "2", "status": 400, "error": {
            "type": "strict_dynamic_mapping_exception", "reason": "mapping set to strict",
            "caused_by": {"type": "x", "reason": "y"}}}},
        {"index": {"_id": "3", "status": 503}},
        # An operator's write block (Elasticsearch 9.3's answer): the index, not the document, refuses.
        {"index": {"_id": "4", "status": 403, "error": {
            "type": "cluster_block_exception", "reason": "index [d] blocked by: [FORBIDDEN/8/index write (api)];"}}},
        {"index": {"_id": "5", "status": 403, "error": {"type": "security_exception", "reason": "no privilege"}}},
    ]
    done, retry, rejected = classify(items, answer)
    assert [i.id for i in done] == ["0"]
    assert [i.id for i in retry] == ["1", "3", "4"]
    assert [(r.item.id, r.status) for r in rejected] == [("2", 400), ("5", 403)]
    assert "strict_dynamic_mapping_exception: mapping set to strict (caused by x: y)" == rejected[0].reason


def test_classify_refuses_a_short_answer():
    with pytest.raises(ValueError):
        classify([BulkItem("a", {})], [])


def test_backoff_is_jittered_and_capped():
    rng = random.Random(1)
    backoff = Backoff(base=0.2, cap=5)
    delays = [backoff.delay(a, rng) for a in range(40)]
    assert all(0.1 <= d <= 5 for d in delays)
    assert len(set(delays)) == len(delays)  # jitter: no two workers retry in lockstep
    assert max(delays[:2]) <= 0.4


def test_parse_raw_reasons():
    doc = RawDocument(id="a", source="s", text="hello", ingested_at=utc_now())
    assert parse_raw(doc.to_json(), 10_000).id == "a"
    for value, words in [(None, "tombstone"), (b"", "empty"), (b"[1]", "JSON object"),
                         (b"x" * 20_000, "over the limit"), (b'{"id": "a"}', "invalid RawDocument")]:
        with pytest.raises(RecordError) as info:
            parse_raw(value, 10_000)
        assert words in info.value.reason


def test_dead_letter_keeps_undecodable_bytes():
    letter = dead_letter("validate", "bad", b"\xff\xfeabc", Origin("t.raw", 2, 41))
    assert letter.original == "\\xff\\xfeabc" and (letter.topic, letter.partition, letter.offset) == ("t.raw", 2, 41)


def test_title_is_scored_with_the_text():
    doc = RawDocument(id="a", source="s", title="Profit warning", text="Shares fell.", ingested_at=utc_now())
    assert text_to_score(doc) == "Profit warning. Shares fell."
    same = doc.model_copy(update={"text": "Profit warning: shares fell."})
    assert text_to_score(same) == "Profit warning: shares fell."
