"""Dedup: exact and near-duplicates, the ticker test, two-phase commit, persistence, window expiry, older files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import sqlite3
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


def doc(doc_id: str, text: str = WIRE, url: str | None = None, source: str = "rss:a",
        tickers: tuple[str, ...] = ()) -> RawDocument:
    return RawDocument(id=doc_id, source=source, text=text, url=url, tickers=list(tickers),
                       ingested_at=datetime(2026, 11, 28, tzinfo=UTC))


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
    index.prune()  # a's signature leaves the window, and its tickers with it
    assert [r[0] for r in index._conn().execute("SELECT id FROM seen_tickers")] == []
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


# Auto-generated market news: one template, many companies (MinHash similarity ~0.93 between two of them).
TEMPLATE = ("{name} shares fell 4.2% on Tuesday after the company missed analyst estimates for quarterly revenue "
            "and cut its guidance for the year. The stock has a consensus rating of Hold and an average price target "
            "of $210.50 among the analysts who cover it, according to data compiled by MarketBeat")
APPLE = TEMPLATE.format(name="Apple (NASDAQ:AAPL)")
MICROSOFT = TEMPLATE.format(name="Microsoft (NASDAQ:MSFT)")


def test_templated_story_about_another_company_is_not_a_duplicate(index: DedupIndex) -> None:
    assert index.check(doc("a", APPLE, tickers=("AAPL",))) is None
    assert index.check(doc("b", MICROSOFT, tickers=("MSFT",))) is None  # staged a: MSFT news must still go out
    index.commit(["a", "b"])
    assert index.check(doc("c", TEMPLATE.format(name="Alphabet (NASDAQ:GOOG)"), tickers=("GOOG",))) is None
    dup = index.check(doc("d", APPLE + " (Reporting by A. Writer)", tickers=("AAPL",)))
    assert dup is not None and (dup.kind, dup.of) == ("near", "a")


def test_same_story_naming_the_same_tickers_or_fewer_is_a_near_duplicate(index: DedupIndex) -> None:
    assert index.check(doc("a", tickers=("ACME", "FANUY"))) is None
    index.commit(["a"])
    assert index.check(doc("b", SYNDICATED, tickers=("FANUY", "ACME"))).of == "a"
    assert index.check(doc("c", SYNDICATED, tickers=("ACME",))).of == "a"
    assert index.check(doc("d", SYNDICATED, tickers=("ACME", "ABB"))) is None  # ABB's news is not in a


def test_document_without_tickers_is_a_duplicate_of_a_tickered_one(index: DedupIndex) -> None:
    assert index.check(doc("a", tickers=("ACME",))) is None
    index.commit(["a"])
    assert index.check(doc("b", SYNDICATED)).of == "a"


def test_most_similar_candidate_that_names_the_tickers_wins(index: DedupIndex) -> None:
    assert index.check(doc("a", APPLE, tickers=("AAPL", "MSFT"))) is None
    assert index.check(doc("b", MICROSOFT, tickers=("GOOG",))) is None  # GOOG is not in a
    index.commit(["a", "b"])
    # b is the closer text but does not name MSFT; a does.
    dup = index.check(doc("c", MICROSOFT, tickers=("MSFT",)))
    assert dup is not None and dup.of == "a" and 0.8 <= dup.similarity < 1.0


def test_ticker_test_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "d.sqlite3"
    first = DedupIndex(path, clock=clock)
    first.start()
    first.check(doc("a", APPLE, tickers=("AAPL",)))
    first.check(doc("n", WIRE))
    first.commit(["a", "n"])
    first.close()

    second = DedupIndex(path, clock=clock)
    second.start()
    assert second.check(doc("b", MICROSOFT, tickers=("MSFT",))) is None
    assert second.check(doc("c", APPLE + " Updated.", tickers=("AAPL",))).of == "a"
    assert second.check(doc("d", SYNDICATED, tickers=("ACME",))) is None  # n named no ticker: not ACME's news
    second.close()


def test_a_file_of_an_older_release_is_read_and_still_written_as_it_was(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "d.sqlite3"
    signature = DedupIndex(path).signature(APPLE)  # needs no database
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, url TEXT, source TEXT, seen_at REAL NOT NULL, minhash BLOB)")
    old.execute("INSERT INTO seen VALUES ('a', NULL, 'rss:a', ?, ?)", (clock.now.timestamp(), signature.tobytes()))
    old.commit()

    index = DedupIndex(path, clock=clock)
    index.start()
    assert index.check(doc("c", APPLE)).of == "a"  # untickered, as before
    # a's tickers are unknown: it might not name AAPL, so AAPL's copy goes out rather than risk losing it.
    assert index.check(doc("b", APPLE, tickers=("AAPL",))) is None
    index.commit(["b"])
    # An older release sharing the file (or one rolled back to) still writes it as it did.
    old.execute("INSERT OR REPLACE INTO seen VALUES ('z', NULL, 'rss:z', ?, NULL)", (clock.now.timestamp(),))
    old.commit()
    old.close()
    index.close()

    again = DedupIndex(path, clock=clock)
    again.start()
    assert again.check(doc("z", MICROSOFT)).kind == "id"
    assert again.check(doc("d", MICROSOFT, tickers=("MSFT",))) is None
    assert again.check(doc("e", APPLE, tickers=("AAPL",))).of == "b"
    again.close()


# Two processes on one state file (`ingest serve` beside `ingest file`): each sees what the other committed.
GLOBEX = ("Shares of Globex fell six percent on Wednesday after the chemicals group warned that weak demand "
          "in Europe would weigh on margins for the rest of the year")


@pytest.fixture
def pair(tmp_path: Path, clock: Clock):
    first, second = (DedupIndex(tmp_path / "shared.sqlite3", clock=clock) for _ in range(2))
    first.start()
    second.start()  # both started before anything is committed: no reload at start helps
    yield first, second
    first.close()
    second.close()


def test_near_duplicate_committed_by_another_process_is_found(pair) -> None:
    first, second = pair
    assert first.check(doc("a", url="https://wire.example/1")) is None
    first.commit(["a"])
    dup = second.check(doc("b", SYNDICATED, url="https://paper.example/2", source="rss:b"))
    assert dup is not None and (dup.kind, dup.of) == ("near", "a")
    assert first.check(doc("b", SYNDICATED)).kind == "id"  # b remembered by the second, seen by the first


def test_document_only_staged_by_another_process_is_not_its_original(pair) -> None:
    first, second = pair
    assert first.check(doc("a")) is None  # staged: its delivery may still fail
    assert second.check(doc("b", SYNDICATED)) is None
    second.rollback(["b"])
    first.rollback(["a"])
    assert first.check(doc("a")) is None
    first.commit(["a"])
    assert second.check(doc("b", SYNDICATED)).of == "a"  # committed now


def test_ticker_test_applies_across_processes(pair) -> None:
    first, second = pair
    first.check(doc("a", APPLE, tickers=("AAPL",)))
    first.commit(["a"])
    assert second.check(doc("b", MICROSOFT, tickers=("MSFT",))) is None
    assert second.check(doc("c", APPLE + " Updated.", tickers=("AAPL",))).of == "a"


def test_rows_of_another_process_older_than_the_window_are_not_loaded(pair, clock: Clock) -> None:
    first, second = pair
    second.check(doc("n", GLOBEX))  # second has looked at the file (an empty one)
    first.check(doc("a"))
    first.commit(["a"])
    clock.now += timedelta(hours=49)
    assert second.check(doc("b", SYNDICATED)) is None
    assert "a" not in second._lsh


def test_loaded_rows_expire_even_when_older_than_ones_held(tmp_path: Path, clock: Clock) -> None:
    lagging = Clock()
    lagging.now = clock.now - timedelta(hours=1)  # its commit took the write lock late: an older seen_at
    first = DedupIndex(tmp_path / "shared.sqlite3", clock=lagging)
    second = DedupIndex(tmp_path / "shared.sqlite3", clock=clock)
    first.start()
    second.start()
    second.check(doc("n", GLOBEX))
    second.commit(["n"])
    first.check(doc("a"))
    first.commit(["a"])
    assert second.check(doc("b", SYNDICATED)).of == "a"  # a, an hour older than n, loaded after it
    clock.now += timedelta(hours=47, minutes=30)  # a has left the window, n not
    assert second.check(doc("c", WIRE + " Updated.")) is None
    assert "a" not in second._lsh and "n" in second._lsh
    first.close()
    second.close()


def test_document_committed_by_both_processes_survives_a_rollback(pair) -> None:
    first, second = pair
    assert first.check(doc("a")) is None  # the same document reached both at once
    assert second.check(doc("a")) is None
    first.commit(["a"])
    second.check(doc("n", GLOBEX))  # second looks at the file while it holds a staged
    second.rollback(["a", "n"])  # its own delivery failed, the first's did not
    assert second.check(doc("b", SYNDICATED)).of == "a"


def test_reused_rowids_are_noticed(pair, tmp_path: Path, clock: Clock) -> None:
    first, second = pair
    first.check(doc("x", GLOBEX))
    first.check(doc("z", "a short note"))
    first.commit(["x", "z"])
    assert second.check(doc("y", APPLE)) is None  # second has looked at the rows up to z's, rowid 2
    second.rollback(["y"])
    first.close()
    clock.now += timedelta(days=31)  # nothing written for a whole retention
    third = DedupIndex(tmp_path / "shared.sqlite3", clock=clock)
    third.start()  # prunes every row: SQLite numbers the next one from 1 again
    third.check(doc("a"))
    third.commit(["a"])
    assert third._conn().execute("SELECT rowid FROM seen WHERE id = 'a'").fetchone() == (1,)  # below z's
    assert second.check(doc("b", SYNDICATED)).of == "a"
    third.close()


def test_an_item_a_feed_keeps_stays_known_past_the_retention(index: DedupIndex, clock: Clock) -> None:
    assert index.check(doc("a", url="https://x.com/1")) is None
    index.commit(["a"])
    for _ in range(4):  # still in the feed, polled for 40 days
        clock.now += timedelta(days=10)
        index.prune()
        assert index.check(doc("a", url="https://x.com/1")).kind == "id"
    clock.now += timedelta(days=10)
    index.prune()
    assert index.check(doc("b", "another id for the same link", url="https://x.com/1")).kind == "url"
    clock.now += timedelta(days=31)  # gone from the feed for a whole retention: forgotten
    index.prune()
    assert index.check(doc("a", url="https://x.com/1")) is None


def test_a_renewal_keeps_the_id_but_not_the_signature_past_the_window(tmp_path: Path, clock: Clock) -> None:
    index = DedupIndex(tmp_path / "d.sqlite3", prune_every_hours=1000, clock=clock)  # the renewal alone, no prune
    index.start()
    index.check(doc("a", tickers=("ACME",)))
    index.commit(["a"])
    db = index._conn()
    clock.now += timedelta(hours=1)
    rowid, first_seen = db.execute("SELECT rowid, seen_at FROM seen").fetchone()
    assert index.check(doc("a")).kind == "id"
    assert db.execute("SELECT seen_at FROM seen").fetchone()[0] == first_seen  # inside the window: no write
    clock.now += timedelta(hours=48)
    assert index.check(doc("a")).kind == "id"
    # Renewed; a restart would not reload its signature, so its story is news again as without the renewal.
    assert db.execute("SELECT seen_at, minhash FROM seen").fetchone() == (clock.now.timestamp(), None)
    assert db.execute("SELECT rowid FROM seen").fetchone()[0] == rowid  # other processes' _load follows rowids
    assert db.execute("SELECT COUNT(*) FROM seen_tickers").fetchone()[0] == 0
    assert index.check(doc("b", SYNDICATED)) is None
    index.close()


# A push sender's documents (a scope of their own): they make duplicates of that sender's only, while ingest's own
# sources (no scope) make duplicates of everyone's.
ACME, BETA = "sender:acme", "sender:beta"


def pushed(doc_id: str, text: str = WIRE, url: str | None = None, source: str = "push:acme") -> RawDocument:
    return doc(doc_id, text, url, source)


def test_a_pushed_link_or_text_hides_no_other_source_s_document(index: DedupIndex) -> None:
    # The probe of RELIABILITY.md: acme pushes another text with a feed entry's link, and the wire story, first.
    assert index.check(pushed("p1", "Acme files for bankruptcy", "https://news.example/a"), ACME) is None
    assert index.check(pushed("p2", url="https://acme.example/2"), ACME) is None
    for committed in (False, True):  # staged (this batch), then in the file
        if committed:
            index.commit(["p1", "p2"])
        assert index.check(pushed("b1", "Acme is fine", "https://news.example/a", "push:beta"), BETA) is None
        assert index.check(doc("f1", "Acme shares jump after record sales", "https://news.example/a")) is None
        assert index.check(doc("f2", SYNDICATED, "https://news.example/b")) is None
        index.rollback(["b1", "f1", "f2"])
    # acme's own copies still are: under another of its sources, by link or by text.
    dup = index.check(pushed("p3", "Acme files, again", "https://news.example/a", "push:acme-eu"), ACME)
    assert (dup.kind, dup.of) == ("url", "p1")
    dup = index.check(pushed("p4", SYNDICATED, "https://acme.example/4"), ACME)
    assert (dup.kind, dup.of) == ("near", "p2")


def test_ingest_s_own_documents_still_make_pushed_copies_duplicates(index: DedupIndex) -> None:
    assert index.check(doc("f1", url="https://news.example/a")) is None
    index.commit(["f1"])
    assert index.check(pushed("p1", "Acme files for bankruptcy", "https://news.example/a"), ACME).of == "f1"
    assert index.check(pushed("p2", SYNDICATED, "https://acme.example/2"), ACME).of == "f1"
    assert index.check(doc("f2", SYNDICATED, "https://news.example/b", source="rss:b")).of == "f1"


def test_a_pushed_near_duplicate_s_link_is_its_sender_s_too(index: DedupIndex) -> None:
    # p2, a copy of acme's p1, is remembered with its link: that link must not hide a feed's entry either.
    index.check(pushed("p1"), ACME)
    assert index.check(pushed("p2", SYNDICATED, "https://news.example/a"), ACME).of == "p1"  # p1 staged
    index.commit(["p1"])
    assert index.check(pushed("p3", SYNDICATED, "https://news.example/b"), ACME).of == "p1"  # p1 committed
    assert index.check(pushed("p4", "Acme again", "https://news.example/b"), ACME).of == "p3"  # acme's own
    for n, link in enumerate(("https://news.example/a", "https://news.example/b")):
        assert index.check(doc(f"f{n}", "Acme shares jump after record sales", link)) is None, link


def test_scopes_hold_across_processes_and_are_pruned_with_their_rows(pair, clock: Clock) -> None:
    first, second = pair
    first.check(pushed("p1", url="https://news.example/a"), ACME)
    first.commit(["p1"])
    assert second.check(doc("f1", "Acme shares jump after record sales", "https://news.example/a")) is None
    assert second.check(doc("f2", SYNDICATED, "https://news.example/b")) is None
    second.rollback(["f1", "f2"])
    assert second.check(pushed("p2", SYNDICATED, "https://acme.example/2"), ACME).of == "p1"
    db = first._conn()
    assert db.execute("SELECT id, scope FROM seen_scope ORDER BY id").fetchall() == [("p1", ACME), ("p2", ACME)]
    clock.now += timedelta(days=31)
    first.prune()
    assert db.execute("SELECT COUNT(*) FROM seen_scope").fetchone()[0] == 0


def test_a_scope_left_behind_by_an_older_release_sticks_to_no_new_row(index: DedupIndex) -> None:
    # An older release prunes `seen` alone: a pushed row's scope may outlive it, and must not pass to a feed's row.
    index._conn().execute("INSERT INTO seen_scope VALUES ('x', ?)", (ACME,))
    index.check(doc("x", url="https://news.example/a"))
    index.commit(["x"])
    assert index.check(pushed("b1", "Beta's copy", "https://news.example/a", "push:beta"), BETA).of == "x"
