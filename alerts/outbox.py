"""The persisted outbox: every alert and each of its webhook deliveries, in SQLite.

An alert is written here (one transaction, keyed by its idempotency key) before the Kafka
offsets that produced it are committed, and a delivery stops being pending only when a
receiver answered 2xx or the dispatcher gave it up (``give_up_after``, ``max_attempts``). So a
crash, a restart or a receiver outage loses nothing, and a replayed input raises nothing twice.

Each webhook's pending deliveries form a first-in, first-out queue, in the order the alerts were
raised and stored: one is due only when every one before it is due too, so a retry that waits
holds back the newer alerts instead of being overtaken by them (a receiver's last word on a
ticker is the newest alert). Failed (dead-lettered) deliveries hold back nothing.

The outbox is also the source of truth for the ``alerts`` index and topic: each change bumps
the row's ``version``, and a sync pass mirrors rows whose ``synced_version`` lags behind. A row the
index refused waits ``sync_next_at`` before its next try, so it does not hold back the newer ones, and
a row the index refuses for what it is gets given up: marked mirrored with its ``sync_error`` kept.

A row whose stored alert this release cannot read (a newer release's value of a known field, such as a new alert
``kind``, after a rollback; a corrupted row) costs only itself: the delivery and mirror passes that meet it give it
up (its pending deliveries failed and its mirror given up, both with the reason), log it once and tell
``on_unreadable``; ``finsent alerts retry`` puts it back once it is repaired. Listings show it with the reason.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import takewhile
from pathlib import Path

from pydantic import ValidationError

from finsent.schemas import IGNORE_UNKNOWN, Alert, describe_validation_error, json_time

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    ticker TEXT,
    created_at TEXT NOT NULL,
    alert TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    synced_version INTEGER NOT NULL DEFAULT 0,
    sync_attempts INTEGER NOT NULL DEFAULT 0,
    sync_next_at REAL NOT NULL DEFAULT 0,
    sync_error TEXT
);
CREATE INDEX IF NOT EXISTS alerts_unsynced ON alerts (synced_version, version);
CREATE INDEX IF NOT EXISTS alerts_rule_ticker ON alerts (rule, ticker, created_at);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT NOT NULL REFERENCES alerts (key),
    webhook TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered_at TEXT,
    queued_at REAL,
    PRIMARY KEY (key, webhook)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (status, webhook);
"""
# A webhook's queue: its pending deliveries in rowid order, the order they were stored (as raised). A VACUUM could
# renumber the rowids; nothing runs one.
_HEAD = "SELECT next_attempt_at FROM deliveries WHERE status = 'pending' AND webhook = ? ORDER BY rowid LIMIT 1"


@dataclass(frozen=True)
class DueDelivery:
    key: str
    webhook: str
    attempts: int
    alert: Alert
    queued_at: float  # when it was queued, or requeued: give_up_after counts from here


@dataclass(frozen=True)
class AlertRow:
    alert: Alert
    delivered_at: datetime | None
    last_error: str | None
    version: int
    sync_attempts: int = 0  # failed tries to mirror it since it was last mirrored
    sync_error: str | None = None  # why the index refused it last (kept when the mirror gave it up)

    def document(self) -> dict:
        """The ``alerts`` index document (the Alert plus delivery bookkeeping)."""
        doc = self.alert.model_dump(mode="json")
        doc["delivered_at"] = json_time(self.delivered_at) if self.delivered_at else None
        doc["last_error"] = self.last_error
        return doc

    def listing(self) -> dict:
        """What ``finsent alerts list --outbox`` shows: the document, plus why the index refused it (not a field
        of the index's strict mapping)."""
        return self.document() | {"sync_error": self.sync_error}


@dataclass(frozen=True)
class UnreadableRow:
    """A row whose stored alert this release cannot read: what its columns say, and why."""

    key: str
    rule: str
    ticker: str | None
    created_at: datetime
    status: str
    attempts: int
    last_error: str | None
    sync_error: str | None
    reason: str

    def listing(self) -> dict:
        """What ``finsent alerts list --outbox`` shows: the columns, with the reason as its message."""
        return {"idempotency_key": self.key, "rule": self.rule, "ticker": self.ticker,
                "created_at": json_time(self.created_at), "status": self.status, "attempts": self.attempts,
                "message": self.reason, "last_error": self.last_error, "sync_error": self.sync_error,
                "unreadable": self.reason}


def _alert(stored: str) -> Alert | str:
    """A stored alert, or why this release cannot read it. The fields of a newer release that wrote it (before a
    rollback to this one) are dropped; a new value of a known field is not valid here."""
    try:
        return Alert.model_validate_json(stored, context=IGNORE_UNKNOWN)
    except ValidationError as exc:
        return f"stored alert not readable by this release: {describe_validation_error(exc)}"[:2000]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


class Outbox:
    """Thread-safe (one connection behind a lock); the engine and the dispatcher share it.

    ``on_unreadable(key, reason)`` is told, once, of each row that :meth:`due` or :meth:`unsynced` gave up because
    its stored alert cannot be read (after the transaction that marked it).
    """

    def __init__(self, path: Path, on_unreadable: Callable[[str, str], None] | None = None) -> None:
        self.path = Path(path)
        self.on_unreadable = on_unreadable
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def start(self) -> Outbox:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged alert survives a power cut
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        self._conn = conn
        self._add_queued_at()
        self._add_sync_columns()
        return self

    def _add_queued_at(self) -> None:
        """An outbox from before ``give_up_after``: its pending deliveries count from their next attempt."""
        with self._tx() as conn:
            if "queued_at" not in {row["name"] for row in conn.execute("PRAGMA table_info(deliveries)")}:
                conn.execute("ALTER TABLE deliveries ADD COLUMN queued_at REAL")
            conn.execute("UPDATE deliveries SET queued_at = next_attempt_at WHERE queued_at IS NULL")

    def _add_sync_columns(self) -> None:
        """An outbox from before the mirror's backoff: its rows have never failed to mirror, and are due."""
        with self._tx() as conn:
            have = {row["name"] for row in conn.execute("PRAGMA table_info(alerts)")}
            for column, kind in (("sync_attempts", "INTEGER NOT NULL DEFAULT 0"),
                                 ("sync_next_at", "REAL NOT NULL DEFAULT 0"), ("sync_error", "TEXT")):
                if column not in have:
                    conn.execute(f"ALTER TABLE alerts ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            raise RuntimeError("outbox not started")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- writing -------------------------------------------------------------------------------
    def enqueue(self, alert: Alert, webhooks: list[str], now: float) -> bool:
        """Store a new alert and one pending delivery per webhook; False when the key exists.

        A delivery joins the back of its webhook's queue: due no earlier than the pending ones before it.
        """
        if not webhooks:  # it would look sent; a rules file without webhooks is refused when loaded
            raise ValueError(f"alert {alert.idempotency_key}: no webhook to deliver it to")
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO alerts (key, rule, ticker, created_at, alert) VALUES (?, ?, ?, ?, ?)",
                (alert.idempotency_key, alert.rule, alert.ticker, _iso(alert.created_at), alert.model_dump_json()),
            )
            if cursor.rowcount == 0:
                return False
            conn.executemany(
                "INSERT INTO deliveries (key, webhook, next_attempt_at, queued_at)"
                f" VALUES (?, ?, MAX(?, COALESCE(({_HEAD}), ?)), ?)",
                [(alert.idempotency_key, hook, now, hook, now, now) for hook in webhooks],
            )
            return True

    def record_attempt(self, key: str, webhook: str, *, ok: bool, error: str | None, at: datetime,
                       retry_at: float | None) -> str:
        """Record one attempt: delivered (``ok``), retry at ``retry_at``, or dead (``retry_at`` None).

        Returns the alert's status after the attempt.
        """
        status = "delivered" if ok else ("pending" if retry_at is not None else "failed")
        with self._tx() as conn:
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = ?"
                " WHERE key = ? AND webhook = ?",
                (status, error, retry_at, _iso(at) if ok else None, key, webhook),
            )
            return self._refresh(conn, key)

    def requeue_failed(self, now: float, key: str | None = None) -> int:
        """Give dead-lettered deliveries a fresh set of attempts; returns how many."""
        with self._tx() as conn:
            where, args = ("status = 'failed'", ()) if key is None else ("status = 'failed' AND key = ?", (key,))
            keys = [row["key"] for row in conn.execute(f"SELECT DISTINCT key FROM deliveries WHERE {where}", args)]
            count = conn.execute(
                f"UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, queued_at = ?"
                f" WHERE {where}", (now, now, *args),
            ).rowcount
            for k in keys:
                self._refresh(conn, k)
            return count

    def _refresh(self, conn: sqlite3.Connection, key: str) -> str:
        rows = conn.execute(
            "SELECT status, attempts, last_error, delivered_at FROM deliveries WHERE key = ?", (key,)
        ).fetchall()
        statuses = {row["status"] for row in rows}
        status = "pending" if "pending" in statuses else ("failed" if "failed" in statuses else "delivered")
        attempts = sum(row["attempts"] for row in rows)
        errors = [row["last_error"] for row in rows if row["last_error"] and row["status"] != "delivered"]
        delivered = [row["delivered_at"] for row in rows if row["delivered_at"]]
        conn.execute(
            "UPDATE alerts SET status = ?, attempts = ?, last_error = ?, delivered_at = ?, version = version + 1"
            " WHERE key = ?",
            (status, attempts, errors[-1] if errors else None,
             max(delivered) if status == "delivered" and delivered else None, key),
        )
        return status

    def prune(self, before: datetime) -> int:
        """Forget alerts created before ``before`` that are delivered and mirrored; returns how many.

        The ``alerts`` index keeps them, but for those the mirror gave up (``sync_error`` says why). Kept:
        failed alerts (an operator may requeue them), anything not yet mirrored, and the newest alert of each
        rule and ticker, which re-arms its cooldown after a restart (``last_fired``).
        """
        where = (
            "status = 'delivered' AND synced_version >= version AND created_at < ?"
            " AND created_at < (SELECT MAX(created_at) FROM alerts newest"
            " WHERE newest.rule = alerts.rule AND newest.ticker IS alerts.ticker)"
        )
        with self._tx() as conn:
            conn.execute(f"DELETE FROM deliveries WHERE key IN (SELECT key FROM alerts WHERE {where})", (_iso(before),))
            return conn.execute(f"DELETE FROM alerts WHERE {where}", (_iso(before),)).rowcount

    def mark_synced(self, key: str, version: int) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE alerts SET synced_version = MAX(synced_version, ?), sync_attempts = 0,"
                         " sync_next_at = 0, sync_error = NULL WHERE key = ?", (version, key))

    def record_sync_failure(self, key: str, version: int, error: str, *, retry_at: float | None) -> None:
        """The index refused ``version`` of the row: try again at ``retry_at``, or (None) give it up, marked as
        mirrored so that it holds nothing back and can be pruned, with ``sync_error`` saying why."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE alerts SET sync_attempts = sync_attempts + 1, sync_error = ?, sync_next_at = COALESCE(?, 0),"
                " synced_version = CASE WHEN ? IS NULL THEN MAX(synced_version, ?) ELSE synced_version END"
                " WHERE key = ?",
                (error, retry_at, retry_at, version, key),
            )

    def _give_up_unreadable(self, conn: sqlite3.Connection, key: str, reason: str) -> None:
        """A row that cannot be read: its pending deliveries fail and its mirror is given up, with the reason, so
        that no pass meets it again (not an attempt: ``attempts`` stay)."""
        conn.execute("UPDATE deliveries SET status = 'failed', last_error = ? WHERE key = ? AND status = 'pending'",
                     (reason, key))
        self._refresh(conn, key)
        conn.execute("UPDATE alerts SET synced_version = version, sync_next_at = 0, sync_error = ? WHERE key = ?",
                     (reason, key))

    def _told(self, unreadable: list[tuple[str, str]]) -> None:
        for key, reason in unreadable:
            log.error("alert %s in the outbox cannot be read, its deliveries failed and its mirror given up "
                      "(`finsent alerts retry %s` once it is repaired): %s", key, key, reason)
            if self.on_unreadable is not None:
                self.on_unreadable(key, reason)

    # --- reading -------------------------------------------------------------------------------
    def due(self, now: float, limit: int = 100, skip: Collection[str] = ()) -> list[DueDelivery]:
        """The deliveries that may go now: of each webhook not in ``skip`` (busy with earlier ones), its queue
        from the head up to the first delivery not due yet, at most ``limit``. A row that cannot be read is given
        up on the way (``on_unreadable``) and the queue goes on behind it."""
        unreadable: list[tuple[str, str]] = []
        with self._tx() as conn:
            due = [item for hook in self._queued_webhooks(conn) if hook not in skip
                   for item in self._due_of(conn, hook, now, limit, unreadable)]
            for key, reason in unreadable:
                self._give_up_unreadable(conn, key, reason)
        self._told(unreadable)
        return due

    def next_due(self) -> float | None:
        """When the next delivery may go: the earliest next attempt at the head of a webhook's queue."""
        with self._tx() as conn:
            return min((conn.execute(_HEAD, (hook,)).fetchone()[0] for hook in self._queued_webhooks(conn)),
                       default=None)

    @staticmethod
    def _queued_webhooks(conn: sqlite3.Connection) -> list[str]:
        """The webhooks with pending deliveries, an index look-up each (however many deliveries wait)."""
        hooks: list[str] = []
        query = "SELECT MIN(webhook) FROM deliveries WHERE status = 'pending' AND webhook > ?"
        while (hook := conn.execute(query, (hooks[-1] if hooks else "",)).fetchone()[0]) is not None:
            hooks.append(hook)
        return hooks

    @staticmethod
    def _due_of(conn: sqlite3.Connection, webhook: str, now: float, limit: int,
                unreadable: list[tuple[str, str]]) -> list[DueDelivery]:
        """``webhook``'s due deliveries; the keys of those that cannot be read go to ``unreadable`` instead."""
        rows = conn.execute(
            "SELECT d.key, d.attempts, d.next_attempt_at, d.queued_at, a.alert FROM deliveries d"
            " JOIN alerts a ON a.key = d.key WHERE d.status = 'pending' AND d.webhook = ? ORDER BY d.rowid LIMIT ?",
            (webhook, limit))
        due = []
        for r in takewhile(lambda r: r["next_attempt_at"] <= now, rows):  # reads none past the first not due
            alert = _alert(r["alert"])
            if isinstance(alert, str):
                if (r["key"], alert) not in unreadable:  # one row, queued for several webhooks
                    unreadable.append((r["key"], alert))
            else:
                due.append(DueDelivery(r["key"], webhook, r["attempts"], alert, r["queued_at"]))
        return due

    def get(self, key: str) -> AlertRow | UnreadableRow | None:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM alerts WHERE key = ?", (key,)).fetchone()
        return self._row(row) if row else None

    def unsynced(self, now: float = float("inf"), limit: int = 500) -> list[AlertRow]:
        """The oldest rows whose changes are not mirrored yet and that are due (``sync_next_at``) by ``now``. A row
        that cannot be read is given up instead (``on_unreadable``)."""
        unreadable: list[tuple[str, str]] = []
        with self._tx() as conn:
            rows = [self._row(r) for r in conn.execute(
                "SELECT * FROM alerts WHERE synced_version < version AND sync_next_at <= ? ORDER BY created_at"
                " LIMIT ?", (now, limit),
            ).fetchall()]
            for row in rows:
                if isinstance(row, UnreadableRow):
                    unreadable.append((row.key, row.reason))
                    self._give_up_unreadable(conn, row.key, row.reason)
        self._told(unreadable)
        return [row for row in rows if isinstance(row, AlertRow)]

    def list(self, status: str | None = None, limit: int = 50) -> list[AlertRow | UnreadableRow]:
        with self._tx() as conn:
            if status:
                rows = conn.execute("SELECT * FROM alerts WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                                    (status, limit)).fetchall()
            else:
                rows = conn.execute("SELECT * FROM alerts ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute("SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status").fetchall()
        return {row["status"]: row["n"] for row in rows}

    def last_fired(self) -> list[tuple[str, str | None, datetime]]:
        """The newest alert per (rule, ticker), to re-arm cooldowns after a restart."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT rule, ticker, MAX(created_at) AS created_at FROM alerts GROUP BY rule, ticker"
            ).fetchall()
        return [(r["rule"], r["ticker"], datetime.fromisoformat(r["created_at"])) for r in rows]

    def recent_keys(self, limit: int = 100_000) -> list[str]:
        with self._tx() as conn:
            rows = conn.execute("SELECT key FROM alerts ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [r["key"] for r in rows]

    @staticmethod
    def _row(row: sqlite3.Row) -> AlertRow | UnreadableRow:
        alert = _alert(row["alert"])
        if isinstance(alert, str):
            return UnreadableRow(key=row["key"], rule=row["rule"], ticker=row["ticker"],
                                 created_at=datetime.fromisoformat(row["created_at"]), status=row["status"],
                                 attempts=row["attempts"], last_error=row["last_error"],
                                 sync_error=row["sync_error"], reason=alert)
        alert = alert.model_copy(update={"status": row["status"], "attempts": row["attempts"]})
        delivered = datetime.fromisoformat(row["delivered_at"]) if row["delivered_at"] else None
        return AlertRow(alert=alert, delivered_at=delivered, last_error=row["last_error"], version=row["version"],
                        sync_attempts=row["sync_attempts"], sync_error=row["sync_error"])
