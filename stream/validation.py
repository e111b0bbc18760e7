"""Turn raw Kafka record bytes into documents, or into dead letters that say why not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from finsent.schemas import DeadLetter, RawDocument, RecordError, original_text, parse_record, utc_now

# A time further ahead than this is a wrong date (a year typed as 2099, the calendar's last day), not clock
# skew: the record goes to the DLQ. Nearer future times are indexed and kept out of the windows until due
# (stream.windows.refusal).
LATEST_PLAUSIBLE = timedelta(days=1)
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Origin:
    """Where a record came from (kept on its dead letter)."""

    topic: str
    partition: int
    offset: int


def parse_raw(value: bytes | None, max_bytes: int, now: datetime | None = None) -> RawDocument:
    """Validate one raw record; raise RecordError with the reason (empty, too big, schema, a time
    more than :data:`LATEST_PLAUSIBLE` after ``now``)."""
    if value is None:
        raise RecordError("record has no value (tombstone)")
    if len(value) > max_bytes:
        raise RecordError(f"record is {len(value)} bytes, over the limit of {max_bytes} (FINSENT_MAX_TEXT_BYTES)")
    doc = parse_record(RawDocument, value, max_bytes=max_bytes, ignore_unknown=True)  # ingest may be newer
    now = now or utc_now()
    for name in ("published_at", "ingested_at"):
        at = getattr(doc, name)
        if at is not None and at > now + LATEST_PLAUSIBLE:
            raise RecordError(f"{name}: {at.isoformat()} is more than {LATEST_PLAUSIBLE / _HOUR:.0f} h after now "
                              f"({now.isoformat(timespec='seconds')}): a wrong date, not clock skew")
    return doc


def message_overhead(key: bytes | None) -> int:
    """Bytes a Kafka message with this key adds to its value, as the producer counts them against its
    ``max_request_size`` (aiokafka's upper-bound estimate; 4 more bytes for the value's length up to 256 MB)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"", []) + 4


def letter_room(key: bytes | None, max_message_bytes: int) -> tuple[bytes | None, int]:
    """The key a dead letter is sent with, and the most bytes its JSON may take. A key over half the
    largest message leaves no room for the letter, which names the record's place anyway: it is dropped."""
    if key is not None and len(key) > max_message_bytes // 2:
        key = None
    return key, max_message_bytes - message_overhead(key)


def dead_letter(stage: str, reason: str, value: bytes | None, origin: Origin | None,
                now: datetime | None = None, *, max_bytes: int | None = None) -> DeadLetter:
    """The letter for a record; with ``max_bytes``, its JSON is at most that long: the producer refuses a
    larger message, and a letter it refuses would be retried forever, holding the partition."""
    raw = value or b""
    letter = DeadLetter(
        stage=stage,
        reason=reason[:8192] or "unknown",
        original=original_text(raw),
        original_bytes=len(raw),
        topic=origin.topic if origin else None,
        partition=origin.partition if origin else None,
        offset=origin.offset if origin else None,
        failed_at=now or utc_now(),
    )
    if max_bytes is None or len(letter.to_json()) <= max_bytes:
        return letter
    return _truncated(letter, max_bytes)


def _truncated(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """The letter with the longest prefix of ``original`` that fits: escaping makes the JSON up to ~6 times the
    record's size (invalid UTF-8, quotes, control characters), so the prefix is searched for, not computed."""
    text = letter.original
    empty = letter.model_copy(update={"original": "", "original_truncated": True})
    room = max_bytes - len(empty.to_json())  # for the escaped characters between the quotes already counted
    low, high = 0, len(text)  # the longest fitting prefix has between low and high characters
    while low < high:
        middle = (low + high + 1) // 2
        if len(orjson.dumps(text[:middle])) - 2 <= room:
            low = middle
        else:
            high = middle - 1
    return empty.model_copy(update={"original": text[:low]})
