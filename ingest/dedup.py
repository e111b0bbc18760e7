"""Duplicate detection: exact (document id, canonical URL) and near-duplicate (MinHash LSH).

Two-phase, so a document is remembered only once Kafka holds it: :meth:`DedupIndex.check`
classifies a document and, when it is new, *stages* it (later documents of the same batch
see it); :meth:`commit` persists staged documents after the broker acknowledged them and
:meth:`rollback` forgets the ones whose delivery failed, so the next poll retries them.

State lives in SQLite: ids and URLs for ``retention`` since they were last seen (a feed may keep an
item for weeks; a duplicate found by id or URL renews its row once that row left the window),
MinHash signatures for the near-duplicate ``window`` since they were first seen. A restart reloads
the signatures of the window into the LSH index, so nothing already produced is produced again.
Processes sharing the file (``ingest serve`` beside ``ingest file``, ``ingest rss``...) see each
other's documents: before each near-duplicate search the index takes in the signatures committed
since its last look, so a document another process committed is known from this one's next check on.
Near-duplicates are looked for only in texts of ``min_tokens`` words or more: two short posts
that say the same thing are two opinions, a syndicated wire story is one. A similar text is a
near-duplicate only if the earlier document names every ticker this one names: auto-generated
market news fills one template with many companies, and MSFT's story must not hide behind AAPL's.
The tickers are kept beside the signature, in a table of their own (``seen_tickers``), so an older
release sharing or reusing the file still writes ``seen`` as it did; a signature without tickers
recorded (an older release's) may name anything, so it hides only documents without tickers.
A near-duplicate is never produced, but its id is remembered (without a signature) along with its
original's, so it stays known for the retention instead of becoming news again once the original
leaves the window.
A URL or a text is one story whatever the source, but a push sender is not trusted with other sources' documents:
a document checked with a ``scope`` (the push endpoint gives its sender's, ingest.push_tokens) is a URL or
near-duplicate of ingest's own documents (no scope) and of its scope's, while only ingest's own make one of theirs
a duplicate. So a pushed text carrying a feed entry's link, or close to its text, cannot keep the entry from being
produced; a syndicated story pushed before the feed has it comes through twice, the lesser harm. An id is a
duplicate whatever the scope: a pushed document takes another source's id only where its sender may write that
source (ingest.push_tokens), and one without a source_id takes its source's id for the URL, not the URL's alone
(finsent.schemas.document_id). Scopes are kept in a table of their own (``seen_scope``), for the reason tickers are;
a row without one (ingest's own, or written before scopes were) counts as ingest's own.
Old rows are pruned at start and then at most every ``prune_every_hours``, on commit, so a
long-running process keeps its state to the retention.
"""

from __future__ import annotations

import heapq
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np

from finsent.schemas import RawDocument, utc_now

_WORD = re.compile(r"\w+")
NUM_PERM = 128
SCHEME = "affine32"  # datasketch 2 default; stored signatures are uint32
SHINGLE = 3


@dataclass(frozen=True, slots=True)
class Duplicate:
    kind: str  # "id" | "url" | "near"
    of: str  # id of the document already seen
    similarity: float = 1.0


def shingles(text: str, size: int = SHINGLE) -> list[str]:
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + size]) for i in range(len(words) - size + 1)]


def dedup_text(doc: RawDocument) -> str:
    return f"{doc.title} {doc.text}" if doc.title and doc.title not in doc.text else doc.text


def _tickers_text(doc: RawDocument) -> str:
    return " ".join(sorted(set(doc.tickers)))  # tickers hold no spaces; "" = names none


def _covers(theirs: str | None, ours: str | None) -> bool:
    """Whether a document of scope ``theirs`` may make one of scope ``ours`` a URL or near-duplicate."""
    return theirs is None or theirs == ours


class _Staged(NamedTuple):
    doc: RawDocument  # carries its tickers
    signature: np.ndarray | None
    scope: str | None


class DedupIndex:
    def __init__(
        self,
        path: Path,
        *,
        window_hours: float = 48.0,
        retention_days: float = 30.0,
        threshold: float = 0.8,
        min_tokens: int = 8,
        prune_every_hours: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.path = Path(path)
        self.window = timedelta(hours=window_hours)
        self.retention = max(timedelta(days=retention_days), self.window)
        self.threshold = threshold
        self.min_tokens = min_tokens
        self.prune_every = timedelta(hours=prune_every_hours)
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        self._lsh = None
        # (seen_at, id), a heap: another process's rows can arrive older than ones already held.
        self._in_lsh: list[tuple[float, str]] = []
        self._last: tuple[int, str] | None = None  # (rowid, id) of the newest row looked at; None: never looked
        self._staged: dict[str, _Staged] = {}
        self._staged_urls: dict[tuple[str | None, str], str] = {}  # (scope, url) -> id
        # id -> (near-duplicate, id of its staged original, its scope)
        self._staged_near: dict[str, tuple[RawDocument, str, str | None]] = {}
        self._pruned_at: datetime | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        from datasketch import MinHashLSH

        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS seen (
                id TEXT PRIMARY KEY, url TEXT, source TEXT, seen_at REAL NOT NULL, minhash BLOB);
            CREATE TABLE IF NOT EXISTS seen_tickers (id TEXT PRIMARY KEY, tickers TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS seen_scope (id TEXT PRIMARY KEY, scope TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS seen_url ON seen(url) WHERE url IS NOT NULL;
            CREATE INDEX IF NOT EXISTS seen_at ON seen(seen_at);
            """
        )
        self._db = db
        # LSH finds a pair at its own threshold only half the time: look for candidates well
        # below ours and keep those whose estimated Jaccard similarity reaches it.
        self._lsh = MinHashLSH(threshold=max(0.3, self.threshold - 0.2), num_perm=NUM_PERM)
        self.prune()
        self._last = None
        self._load()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM seen").fetchone()[0]

    # --- the two phases ----------------------------------------------------------------
    def check(self, doc: RawDocument, scope: str | None = None) -> Duplicate | None:
        """The duplicate this document is, or None (and the document is staged). A near-duplicate's
        id is remembered, with its original (see :meth:`_remember_near`). ``scope``: a push sender's, whose
        documents only it and ingest's own sources may make duplicates of by URL or text (module docstring)."""
        db = self._conn()
        self._expire()
        if doc.id in self._staged or doc.id in self._staged_near:
            return Duplicate("id", doc.id)
        row = db.execute("SELECT id, seen_at FROM seen WHERE id = ?", (doc.id,)).fetchone()
        if row:
            self._renew(*row)
            return Duplicate("id", doc.id)
        if doc.url:
            for key in {(None, doc.url), (scope, doc.url)}:
                if key in self._staged_urls:
                    return Duplicate("url", self._staged_urls[key])
            row = db.execute(
                "SELECT s.id, s.seen_at FROM seen s LEFT JOIN seen_scope c ON c.id = s.id "
                "WHERE s.url = ? AND s.seen_at >= ? AND (c.scope IS NULL OR c.scope = ?) LIMIT 1",
                (doc.url, (self.clock() - self.retention).timestamp(), scope),
            ).fetchone()
            if row:
                self._renew(*row)
                return Duplicate("url", row[0])
        signature = self.signature(dedup_text(doc))
        if signature is not None:
            self._load()
            near = self._nearest(signature, frozenset(doc.tickers), scope)
            if near is not None:
                self._remember_near(doc, near.of, scope)
                return near
            self._lsh_insert(doc.id, signature, self.clock().timestamp())
        self._staged[doc.id] = _Staged(doc, signature, scope)
        if doc.url:
            self._staged_urls[(scope, doc.url)] = doc.id
        return None

    def commit(self, ids: Iterable[str]) -> None:
        now = self.clock().timestamp()
        rows, committed = [], set()
        for doc_id in ids:
            doc, signature, scope = self._staged.pop(doc_id)
            if doc.url:
                self._staged_urls.pop((scope, doc.url), None)
            blob, tickers = (signature.tobytes(), _tickers_text(doc)) if signature is not None else (None, None)
            rows.append((doc.id, doc.url, doc.source, now, blob, tickers, scope))
            committed.add(doc_id)
        for near, scope in self._near_of(committed):
            rows.append((near.id, near.url, near.source, now, None, None, scope))
        self._write(rows)
        if self._pruned_at is None or self.clock() - self._pruned_at >= self.prune_every:
            self.prune()

    def rollback(self, ids: Iterable[str]) -> None:
        forgotten = set()
        for doc_id in ids:
            staged = self._staged.pop(doc_id, None)
            if staged is None:
                continue
            doc, signature, scope = staged
            forgotten.add(doc_id)
            if doc.url:
                self._staged_urls.pop((scope, doc.url), None)
            if signature is not None and doc_id in self._lsh and not self._committed(doc_id):
                self._lsh.remove(doc_id)
        self._near_of(forgotten)  # sent again, the original finds its near-duplicates again

    def prune(self) -> None:
        """Forget ids past the retention and signatures past the window."""
        now = self.clock()
        db = self._conn()
        # Together: a pushed row that lost its scope would count as ingest's own.
        db.execute("BEGIN")
        db.execute("DELETE FROM seen_scope WHERE id IN (SELECT id FROM seen WHERE seen_at < ?)",
                   ((now - self.retention).timestamp(),))
        db.execute("DELETE FROM seen WHERE seen_at < ?", ((now - self.retention).timestamp(),))
        db.execute("COMMIT")
        # Only the rows that left the window since the last prune: hourly, it touches an hour of rows.
        since = (self._pruned_at - self.window).timestamp() if self._pruned_at is not None else 0.0
        leaving = (since, (now - self.window).timestamp())
        db.execute("DELETE FROM seen_tickers WHERE id IN (SELECT id FROM seen WHERE minhash IS NOT NULL "
                   "AND seen_at >= ? AND seen_at < ?)", leaving)
        db.execute("UPDATE seen SET minhash = NULL WHERE minhash IS NOT NULL AND seen_at >= ? AND seen_at < ?",
                   leaving)
        self._pruned_at = now

    def _renew(self, doc_id: str, seen_at: float) -> None:
        """Seen again: the retention starts over, so an item a feed keeps for longer is not news again.
        Only once the row left the window (one write per window, not one per poll), and then its
        signature goes as :meth:`prune` would drop it: a renewal must not make a story's text hide
        similar ones for longer. The rowid stays, so other processes' :meth:`_load` is not disturbed."""
        now = self.clock()
        if seen_at >= (now - self.window).timestamp():
            return
        db = self._conn()
        db.execute("BEGIN")
        db.execute("UPDATE seen SET seen_at = ?, minhash = NULL WHERE id = ?", (now.timestamp(), doc_id))
        db.execute("DELETE FROM seen_tickers WHERE id = ?", (doc_id,))
        db.execute("COMMIT")

    # --- near-duplicates ---------------------------------------------------------------
    def _remember_near(self, doc: RawDocument, of: str, scope: str | None) -> None:
        """Remember a near-duplicate's id (in its own scope: its URL is its sender's) once its original is safe:
        now if the original is already committed, else with it (and not at all if the original's delivery fails)."""
        if of in self._staged:
            self._staged_near[doc.id] = (doc, of, scope)
        else:
            self._write([(doc.id, doc.url, doc.source, self.clock().timestamp(), None, None, scope)])

    def _near_of(self, originals: set[str]) -> list[tuple[RawDocument, str | None]]:
        """Unstage and return the near-duplicates staged with any of ``originals``, with their scopes."""
        found = [doc_id for doc_id, (_, of, _) in self._staged_near.items() if of in originals]
        return [(doc, scope) for doc, _, scope in (self._staged_near.pop(doc_id) for doc_id in found)]

    def _write(self, rows: list[tuple]) -> None:
        if rows:
            db = self._conn()
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO seen (id, url, source, seen_at, minhash) VALUES (?, ?, ?, ?, ?)",
                           [row[:5] for row in rows])
            db.executemany("INSERT OR REPLACE INTO seen_tickers (id, tickers) VALUES (?, ?)",
                           [(row[0], row[5]) for row in rows if row[5] is not None])
            # Each row's scope exactly: a scope left by a row an older release pruned must not stick to a new one.
            db.executemany("INSERT OR REPLACE INTO seen_scope (id, scope) VALUES (?, ?)",
                           [(row[0], row[6]) for row in rows if row[6] is not None])
            db.executemany("DELETE FROM seen_scope WHERE id = ?", [(row[0],) for row in rows if row[6] is None])
            db.execute("COMMIT")

    # --- MinHash -----------------------------------------------------------------------
    def signature(self, text: str) -> np.ndarray | None:
        from datasketch import MinHash

        grams = shingles(text)
        if len(grams) < self.min_tokens - SHINGLE + 1:
            return None
        minhash = MinHash(num_perm=NUM_PERM, scheme=SCHEME)
        minhash.update_batch([g.encode("utf-8") for g in grams])
        return minhash.hashvalues.astype(np.uint32)

    def _nearest(self, signature: np.ndarray, tickers: frozenset[str], scope: str | None) -> Duplicate | None:
        """The most similar earlier document that also names all of ``tickers``, of ingest's own or ``scope``'s."""
        from datasketch import MinHash

        best: Duplicate | None = None
        for candidate in self._lsh.query(MinHash(num_perm=NUM_PERM, hashvalues=signature, scheme=SCHEME)):
            other, named, theirs = self._signature_of(candidate)
            if other is None or not _covers(theirs, scope):
                continue
            # Unknown tickers (an older release's row) may not name ours: better a possible
            # duplicate produced than a company's news lost.
            covered = tickers <= named if named is not None else not tickers
            if not covered:
                continue
            similarity = float(np.count_nonzero(other == signature)) / NUM_PERM
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = Duplicate("near", candidate, similarity)
        return best

    def _signature_of(self, doc_id: str) -> tuple[np.ndarray | None, frozenset[str] | None, str | None]:
        """A document's signature, the tickers it names (None: not recorded) and its scope."""
        if doc_id in self._staged:
            doc, signature, scope = self._staged[doc_id]
            return signature, frozenset(doc.tickers), scope
        row = self._conn().execute("SELECT s.minhash, t.tickers, c.scope FROM seen s "
                                   "LEFT JOIN seen_tickers t ON t.id = s.id LEFT JOIN seen_scope c ON c.id = s.id "
                                   "WHERE s.id = ?", (doc_id,)).fetchone()
        if not row or not row[0]:
            return None, None, None
        return (np.frombuffer(row[0], dtype=np.uint32), frozenset(row[1].split()) if row[1] is not None else None,
                row[2])

    def _load(self) -> None:
        """Take into the LSH index the signatures committed to the file since the last look (this process's
        own are already there). Rows are followed by rowid, not ``seen_at``: two processes' commit times
        interleave, and ``INSERT OR REPLACE`` gives a replaced row a new, larger rowid."""
        db = self._conn()
        since = (self.clock() - self.window).timestamp()
        rows = None
        if self._last is not None:
            # One seek on the table's own b-tree: the row last looked at (still there: rowids were not
            # reused) and whatever was committed after it; usually nothing.
            rows = db.execute("SELECT rowid, id, seen_at, minhash FROM seen WHERE rowid >= ? ORDER BY rowid",
                              (self._last[0],)).fetchall()
            if self._last[0]:
                if rows and rows[0][:2] == self._last:
                    rows = rows[1:]
                else:
                    # Pruned, or replaced: once the newest rows are gone (nothing written for a whole
                    # retention), SQLite hands their rowids out again. Look at the whole window.
                    rows = None
            if rows:
                self._last = rows[-1][:2]
        if rows is None:
            # The newest row before the window: a row committed in between is in the window, the next look or both.
            self._last = db.execute("SELECT rowid, id FROM seen ORDER BY rowid DESC LIMIT 1").fetchone() or (0, "")
            rows = db.execute("SELECT rowid, id, seen_at, minhash FROM seen WHERE minhash IS NOT NULL AND seen_at >= ?",
                              (since,)).fetchall()
        for _, doc_id, seen_at, blob in rows:
            if blob is not None and seen_at >= since:  # a pruned signature, or one outside the window: not news
                self._lsh_insert(doc_id, np.frombuffer(blob, dtype=np.uint32), seen_at)

    def _committed(self, doc_id: str) -> bool:
        """Whether the file holds this id's signature: another process may have committed the same
        document while this one held it staged (and so did not load that process's row)."""
        return self._conn().execute("SELECT 1 FROM seen WHERE id = ? AND minhash IS NOT NULL",
                                    (doc_id,)).fetchone() is not None

    def _lsh_insert(self, doc_id: str, signature: np.ndarray, seen_at: float) -> None:
        from datasketch import MinHash

        if doc_id in self._lsh:
            return
        self._lsh.insert(doc_id, MinHash(num_perm=NUM_PERM, hashvalues=signature, scheme=SCHEME))
        heapq.heappush(self._in_lsh, (seen_at, doc_id))

    def _expire(self) -> None:
        horizon = (self.clock() - self.window).timestamp()
        while self._in_lsh and self._in_lsh[0][0] < horizon:
            _, doc_id = heapq.heappop(self._in_lsh)
            if doc_id in self._lsh and doc_id not in self._staged:
                self._lsh.remove(doc_id)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("DedupIndex.start() was not called")
        return self._db
