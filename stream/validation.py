"""Turn raw Kafka record bytes into documents, or into dead letters that say why not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from finsent.schemas import DeadLetter, RawDocument, RecordError, original_text, parse_record, utc_now


@dataclass(frozen=True)
class Origin:
    """Where a record came from (kept on its dead letter)."""

    topic: str
    partition: int
    offset: int


def parse_raw(value: bytes | None, max_bytes: int) -> RawDocument:
    """Validate one raw record; raise RecordError with the reason (empty, too big, schema)."""
    if value is None:
        raise RecordError("record has no value (tombstone)")
    if len(value) > max_bytes:
        raise RecordError(f"record is {len(value)} bytes, over the limit of {max_bytes} (FINSENT_MAX_TEXT_BYTES)")
    return parse_record(RawDocument, value, max_bytes=max_bytes)


def dead_letter(stage: str, reason: str, value: bytes | None, origin: Origin | None,
                now: datetime | None = None) -> DeadLetter:
    return DeadLetter(
        stage=stage,
        reason=reason[:8192] or "unknown",
        original=original_text(value or b""),
        topic=origin.topic if origin else None,
        partition=origin.partition if origin else None,
        offset=origin.offset if origin else None,
        failed_at=now or utc_now(),
    )
