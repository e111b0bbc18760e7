"""Dedup: exact and near-duplicates, two-phase commit, persistence, window expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finsent.schemas import RawDocument
from ingest.dedup import DedupIndex

WIRE = ("Shares of Acme Corp jumped eleven percent on Tuesday after the maker of industrial robots "
        "reported quarterly revenue well above analyst estimates and raised its outlook for the year. "
        "The company said orders from carmakers and electronics plants in Asia doubled from a year earlier, "
        "and its chief executive told analysts on a call that the backlog now covers most of next year")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def doc(doc_id: str, text: str = WIRE, url: str | None = None, source: str = "rss:a") -> RawDocument:
    return RawDocument(id=doc_id, source=source, text=text, url=url, ingested_at=datetime(2026, 11, 28, tzinfo=UTC))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def index(tmp_path: Path, clock: Clock):
    idx = DedupIndex(tmp_path / "dedup.sqlite3", window_hours=48, retention_days=30, clock=clock)
    idx.start()
    yield idx
    idx.close()


def test_exact_id_and_url(index: DedupIndex) -> None:
    assert index.check(doc("a", url="https://x.com/1")) is None
    index.commit(["a"])
    assert index.check(doc("a", text="something else entirely here")).kind == "id"
    dup = index.check(doc("b", text="different words for a different story", url="https://x.com/1"))
    assert (dup.kind, dup.of) == ("url", "a")


def test_syndicated_story_is_a_near_duplicate(index: DedupIndex) -> None:
    assert index.check(doc("a")) is None
    index.commit(["a"])
    reworded = "ACME ROBOTS: " + WIRE.replace("Tuesday", "Tuesday,") + " (Reporting by A. Writer)"
    dup = index.check(doc("b", reworded, source="rss:b"))
    assert dup is not None and dup.kind == "near" and dup.of == "a" and dup.similarity >= 0.8


def test_different_story_is_not_a_duplicate(index: DedupIndex) -> None:
    index.check(doc("a"))
    other = ("Shares of Globex fell six percent on Wednesday after the chemicals group warned that weak demand "
             "in Europe would weigh on margins for the rest of the year")
    assert index.check(doc("b", other)) is None


def test_short_identical_posts_are_two_opinions(index: DedupIndex) -> None:
    assert index.check(doc("a", "$AAPL to the moon")) is None
    assert index.check(doc("b", "$AAPL to the moon")) is None


def test_staged_documents_are_seen_within_a_batch(index: DedupIndex) -> None:
    assert index.check(doc("a")) is None
    assert index.check(doc("b")).kind == "near"


def test_rollback_forgets_and_restart_remembers(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "d.sqlite3"
    first = DedupIndex(path, clock=clock)
    first.start()
    first.check(doc("a", url="https://x.com/1"))
    first.rollback(["a"])  # Kafka did not take it: the next poll must be able to send it again
    assert first.check(doc("a", url="https://x.com/1")) is None
    first.commit(["a"])
    first.close()

    second = DedupIndex(path, clock=clock)
    second.start()
    assert len(second) == 1
    assert second.check(doc("a")).kind == "id"
    assert second.check(doc("z", WIRE + " Updated.")).kind == "near"  # signatures reloaded from SQLite
    second.close()


def test_near_duplicates_only_within_the_window_ids_for_retention(tmp_path: Path, clock: Clock) -> None:
    index = DedupIndex(tmp_path / "d.sqlite3", window_hours=48, retention_days=30, clock=clock)
    index.start()
    index.check(doc("a"))
    index.commit(["a"])
    clock.now += timedelta(hours=49)
    assert index.check(doc("b")) is None  # the same story two days later is news again
    assert index.check(doc("a")).kind == "id"
    clock.now += timedelta(days=31)
    index.prune()
    assert index.check(doc("a", "brand new text that is unrelated")) is None
    index.close()


SYNDICATED = "ACME ROBOTS: " + WIRE + " (Reporting by A. Writer)"


def test_near_duplicate_stays_known_after_the_window(index: DedupIndex, clock: Clock) -> None:
    index.check(doc("a"))
    index.commit(["a"])
    assert index.check(doc("b", SYNDICATED, source="rss:b")).kind == "near"
    clock.now += timedelta(hours=49)  # a's signature has left the window; feed b still lists its copy
    assert index.check(doc("b", SYNDICATED, source="rss:b")).kind == "id"


def test_near_duplicate_of_a_staged_document_is_remembered_with_it(index: DedupIndex, clock: Clock) -> None:
    index.check(doc("a"))
    assert index.check(doc("b", SYNDICATED)).of == "a"
    index.rollback(["a"])  # a did not reach Kafka: b is not its duplicate any more, it may go through
    assert index.check(doc("b", SYNDICATED)) is None
    index.rollback(["b"])
    index.check(doc("a"))
    assert index.check(doc("b", SYNDICATED)).of == "a"
    assert index.check(doc("b", SYNDICATED)).kind == "id"  # the same copy twice in one batch
    index.commit(["a"])
    clock.now += timedelta(hours=49)
    assert index.check(doc("b", SYNDICATED)).kind == "id"


def test_a_long_running_index_prunes_on_commit(index: DedupIndex, clock: Clock) -> None:
    index.check(doc("a"))
    index.commit(["a"])
    clock.now += timedelta(days=31)  # past the retention, without a restart
    index.check(doc("c", "an unrelated short note"))
    index.commit(["c"])
    assert len(index) == 1
    assert index.check(doc("a", "brand new text that is unrelated")) is None
