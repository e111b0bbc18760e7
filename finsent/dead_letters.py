"""What the dead-letter topic holds, and which letters a replay may send back.

Pure logic; ``finsent dlq`` (``finsent/dead_letters_cli.py``) reads the topic, asks
Elasticsearch which documents it already has, and produces the replays.

A replay sends a letter's original bytes back to the topic they came from, but only to an
entry topic (``finsent.raw`` or ``finsent.labels``) and only if they now pass the same check
the consumer makes. The other stages' letters describe internal faults: replaying a window
event or an alert input would count it twice.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from finsent.schemas import DeadLetter, RecordError, parse_record

# Checks a record's bytes as its consumer would; returns the document id (None where records have
# none) or raises RecordError with the reason.
Check = Callable[[bytes], str | None]

REPLAY = "replay"

# A replayed record carries the time it was sent again. The worker measures its latency from then:
# from the document's ingest time, a replay after a day's outage would read as a day of latency and
# page whoever watches the latency objective.
REPLAYED_AT_HEADER = "finsent-replayed-at"


def replay_headers(now: datetime) -> list[tuple[str, bytes]]:
    return [(REPLAYED_AT_HEADER, now.isoformat().encode("ascii"))]


def replayed_at(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> datetime | None:
    """The replay time a record's headers carry; None if none, or if it is not a timezone-aware time."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name != REPLAYED_AT_HEADER:
            continue
        try:
            moment = datetime.fromisoformat(bytes(value).decode("ascii"))
        except (TypeError, ValueError, UnicodeDecodeError):
            return None
        return moment if moment.tzinfo is not None else None
    return None


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter and where it lies in the DLQ topic."""

    partition: int
    offset: int
    key: bytes | None
    letter: DeadLetter


def read_letter(partition: int, offset: int, key: bytes | None, value: bytes | None) -> StoredLetter:
    """Parse one DLQ record; raises RecordError if it is not a dead letter."""
    return StoredLetter(partition, offset, key, parse_record(DeadLetter, value or b"", ignore_unknown=True))


@dataclass(frozen=True)
class LetterFilter:
    stage: str | None = None
    reason_contains: str | None = None
    until: datetime | None = None

    def matches(self, stored: StoredLetter) -> bool:
        letter = stored.letter
        return ((self.stage is None or letter.stage == self.stage)
                and (self.reason_contains is None or self.reason_contains.lower() in letter.reason.lower())
                and (self.until is None or letter.failed_at <= self.until))


@dataclass
class Summary:
    """Counts by stage and source topic, and the newest letters, kept as the topic is read."""

    newest_kept: int = 20
    total: int = 0
    by_stage: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    newest: deque[StoredLetter] = field(init=False)

    def __post_init__(self) -> None:
        self.newest = deque(maxlen=self.newest_kept)

    def add(self, stored: StoredLetter) -> None:
        self.total += 1
        self.by_stage[(stored.letter.stage, stored.letter.topic)] += 1
        self.newest.append(stored)

    def newest_first(self) -> list[StoredLetter]:
        return sorted(self.newest, key=lambda s: s.letter.failed_at, reverse=True)


@dataclass(frozen=True)
class ReplayItem:
    stored: StoredLetter
    verdict: str  # REPLAY, or why not
    doc_id: str | None = None

    @property
    def target(self) -> str | None:
        return self.stored.letter.topic if self.verdict == REPLAY else None

    @property
    def value(self) -> bytes:
        # Letters keep invalid UTF-8 as backslash escapes; such bytes fail their check again anyway.
        return self.stored.letter.original.encode("utf-8")


class ReplayPlanner:
    """Decides, letter by letter, what a replay sends. Holds the ids already planned, so a
    document dead-lettered twice goes back once."""

    def __init__(self, checks: Mapping[str, Check]) -> None:
        self.checks = checks
        self._planned_ids: set[str] = set()

    def plan(self, letters: Iterable[StoredLetter]) -> list[ReplayItem]:
        items = []
        for stored in letters:
            letter = stored.letter
            check = self.checks.get(letter.topic or "")
            if check is None:
                where = f"from {letter.topic}" if letter.topic else "with no source topic"
                items.append(ReplayItem(stored, f"not replayable: stage {letter.stage} {where}"))
                continue
            if letter.original_truncated:
                items.append(ReplayItem(stored, f"not replayable: the letter holds only part of the "
                                                f"{letter.original_bytes or '?'}-byte record"))
                continue
            try:
                doc_id = check(letter.original.encode("utf-8"))
            except RecordError as exc:
                items.append(ReplayItem(stored, f"still invalid: {exc.reason}"))
                continue
            if doc_id is not None and doc_id in self._planned_ids:
                items.append(ReplayItem(stored, "duplicate of an earlier letter", doc_id))
                continue
            if doc_id is not None:
                self._planned_ids.add(doc_id)
            items.append(ReplayItem(stored, REPLAY, doc_id))
        return items

    @staticmethod
    def drop_indexed(items: list[ReplayItem], indexed_ids: set[str]) -> list[ReplayItem]:
        """Documents the index already holds were scored since (by an earlier replay): sending them
        again would count them twice in the windows."""
        return [ReplayItem(i.stored, "already indexed", i.doc_id)
                if i.verdict == REPLAY and i.doc_id in indexed_ids else i for i in items]


def verdict_counts(items: Iterable[ReplayItem]) -> Counter[str]:
    """Verdicts with their details cut off (``still invalid: …`` → ``still invalid``)."""
    return Counter(item.verdict.split(":", 1)[0] for item in items)
