"""What `finsent dlq` shows and what a replay sends back (pure logic; the real topic is in
tests/integration/test_dlq_replay.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from finsent.dead_letters import (
    REPLAY, LetterFilter, ReplayPlanner, StoredLetter, Summary, read_letter, replay_headers, replayed_at,
    verdict_counts,
)
from finsent.dead_letters_cli import parse_moment
from finsent.schemas import DeadLetter, RecordError

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _stored(offset: int, *, stage: str = "index", topic: str | None = "f.raw", original: str = "{}",
            reason: str = "refused", minutes_ago: int = 0) -> StoredLetter:
    letter = DeadLetter(stage=stage, reason=reason, original=original, topic=topic, partition=0, offset=offset,
                        failed_at=NOW - timedelta(minutes=minutes_ago))
    return StoredLetter(partition=1, offset=offset, key=b"AAPL", letter=letter)


def _raw_check(value: bytes) -> str:
    if not value.startswith(b"doc-"):
        raise RecordError("not a document")
    return value.decode()


def test_since_takes_a_duration_or_a_zoned_time():
    assert parse_moment("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_moment("2026-11-29T08:00:00Z", NOW) == datetime(2026, 11, 29, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="no time zone"):
        parse_moment("2026-11-29T08:00:00", NOW)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_moment("yesterday", NOW)


def test_a_record_that_is_not_a_dead_letter_says_why():
    with pytest.raises(RecordError, match="not valid JSON"):
        read_letter(0, 5, None, b"not a dead letter")
    stored = read_letter(2, 9, b"k", _stored(3).letter.to_json())
    assert (stored.partition, stored.offset, stored.key, stored.letter.offset) == (2, 9, b"k", 3)


def test_filter_by_stage_reason_and_time():
    late = _stored(1, stage="validate", reason="Record is EMPTY")
    early = _stored(2, minutes_ago=90)
    assert LetterFilter(stage="validate").matches(late) and not LetterFilter(stage="validate").matches(early)
    assert LetterFilter(reason_contains="empty").matches(late)
    assert not LetterFilter(reason_contains="empty").matches(early)
    assert LetterFilter(until=NOW - timedelta(hours=1)).matches(early)
    assert not LetterFilter(until=NOW - timedelta(hours=1)).matches(late)


def test_summary_counts_everything_and_keeps_the_newest():
    summary = Summary(newest_kept=2)
    for offset, minutes_ago in ((0, 30), (1, 20), (2, 10)):
        summary.add(_stored(offset, minutes_ago=minutes_ago))
    summary.add(_stored(3, stage="labels", topic="f.labels", minutes_ago=40))
    assert summary.total == 4
    assert summary.by_stage == {("index", "f.raw"): 3, ("labels", "f.labels"): 1}
    assert [s.offset for s in summary.newest_first()] == [2, 3]  # the last two read, newest first


def test_replay_sends_only_entry_topic_records_that_pass_their_check_once():
    planner = ReplayPlanner({"f.raw": _raw_check})
    items = planner.plan([
        _stored(0, original="doc-1"),
        _stored(1, original="{bad"),
        _stored(2, original="doc-1"),  # the same document dead-lettered twice
        _stored(3, stage="windows", topic="f.window-events", original="doc-9"),
        _stored(4, stage="alerts.rules", topic=None),
        _stored(5, original="doc-2"),
    ])
    assert [i.verdict for i in items] == [
        REPLAY, "still invalid: not a document", "duplicate of an earlier letter",
        "not replayable: stage windows from f.window-events", "not replayable: stage alerts.rules with no source topic",
        REPLAY,
    ]
    assert [(i.target, i.value, i.doc_id) for i in items if i.verdict == REPLAY] == [
        ("f.raw", b"doc-1", "doc-1"), ("f.raw", b"doc-2", "doc-2")]
    assert planner.plan([_stored(6, original="doc-2")])[0].verdict.startswith("duplicate")  # across chunks

    kept = ReplayPlanner.drop_indexed(items, {"doc-2"})
    assert [i.verdict for i in kept][0] == REPLAY and kept[-1].verdict == "already indexed"
    assert kept[-1].target is None
    assert verdict_counts(kept) == {REPLAY: 1, "still invalid": 1, "duplicate of an earlier letter": 1,
                                    "not replayable": 2, "already indexed": 1}


def test_a_letter_cut_to_fit_the_dlq_is_not_replayed():
    cut = _stored(0, original="doc-1")
    cut = dataclasses.replace(cut, letter=cut.letter.model_copy(update={"original_truncated": True,
                                                                       "original_bytes": 2_000_000}))
    [item] = ReplayPlanner({"f.raw": _raw_check}).plan([cut])
    assert item.verdict == "not replayable: the letter holds only part of the 2000000-byte record"


def test_the_replay_time_travels_in_a_header_and_only_a_zoned_time_is_read():
    headers = replay_headers(NOW)
    assert replayed_at(headers) == NOW
    assert replayed_at(dict(headers)) == NOW  # Faust may hand headers over as a mapping
    assert replayed_at([("other", b"x"), *headers]) == NOW
    assert replayed_at(None) is None and replayed_at([]) is None  # not a replay
    for bad in (b"yesterday", b"2026-11-30T12:00:00", b"\xff"):  # unreadable, no zone, not ASCII
        assert replayed_at([("finsent-replayed-at", bad)]) is None
