"""The outbox's mirror to the alerts index and topic (AlertService.sync) against a fake Elasticsearch and producer:
a row the index refuses waits out a backoff instead of holding back the newer ones, and is given up when refused for
what it is."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from alerts.outbox import Outbox
from alerts.rules import parse_rules
from alerts.service import SYNC_GIVE_UP_AFTER, AlertService
from finsent.schemas import Alert
from finsent.settings import Settings

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)


class Index:
    """A bulk endpoint that answers ``refuse[key]`` for the keys it lists and indexes the rest."""

    def __init__(self, refuse: dict[str, int]) -> None:
        self.refuse = refuse
        self.docs: dict[str, dict] = {}

    def bulk(self, operations: list[dict], refresh: str) -> dict:
        items = []
        for action, doc in zip(operations[::2], operations[1::2], strict=True):
            key = action["index"]["_id"]
            if key in self.refuse:
                items.append({"index": {"_id": key, "status": self.refuse[key], "error": {"type": "mapping_error"}}})
            else:
                self.docs[key] = doc
                items.append({"index": {"_id": key, "status": 201}})
        return {"items": items}


class Producer:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.keys.append(key)

    def flush(self, timeout: float) -> None:
        pass


def alert(key: str, minutes: int) -> Alert:
    return Alert(idempotency_key=key * 40, rule="shift", kind="sentiment_shift", ticker="AAPL", window="15m",
                 window_start=T0, message="AAPL fell", created_at=T0 + timedelta(minutes=minutes))


def test_a_row_the_index_refuses_waits_its_turn_and_is_given_up_when_refused_for_what_it_is(tmp_path):
    rules = parse_rules({"rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3}],
                         "webhooks": {"ops": {"url": "http://127.0.0.1:9/hook"}}})
    registry, wall = CollectorRegistry(), [1_000_000.0]
    service = AlertService(Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr("s" * 32)), rules,
                           registry=registry, clock=lambda: T0, wall=lambda: wall[0])
    service.outbox.start()
    service._es, service._producer = Index({"b" * 40: 400, "c" * 40: 503}), Producer()
    try:
        for key, minutes in (("b", 0), ("c", 1), ("d", 2)):
            service.outbox.enqueue(alert(key, minutes), ["ops"], wall[0])
        assert service.sync() == 1 and service._producer.keys == [b"d" * 40]
        assert [row.alert.idempotency_key[0] for row in service.outbox.unsynced(wall[0])] == []  # both wait
        for _ in range(2 * SYNC_GIVE_UP_AFTER):
            wall[0] += 3600  # past any backoff
            service.sync()
        given_up, busy = service.outbox.get("b" * 40), service.outbox.get("c" * 40)
        assert given_up.sync_attempts == SYNC_GIVE_UP_AFTER and "400" in given_up.sync_error
        assert given_up.alert.idempotency_key not in {r.alert.idempotency_key for r in service.outbox.unsynced()}
        assert given_up.listing()["sync_error"] == given_up.sync_error and "sync_error" not in given_up.document()
        assert busy.sync_attempts > SYNC_GIVE_UP_AFTER and [r.alert.idempotency_key for r in
                                                            service.outbox.unsynced()] == ["c" * 40]  # 503: kept
        assert registry.get_sample_value("finsent_alerts_sync_errors_total", {"sink": "elasticsearch"}) >= 6
        assert registry.get_sample_value("finsent_alerts_sync_given_up_total") == 1  # b only: a 503 is retried
        # Delivered and old, the given-up row leaves the outbox like a mirrored one.
        for key in "bcd":
            service.outbox.record_attempt(key * 40, "ops", ok=True, error=None, at=T0, retry_at=None)
        wall[0] += 3600
        service._es.refuse.pop("c" * 40)
        service.sync()
        assert service.outbox.prune(T0 + timedelta(days=1)) == 2 and service.outbox.get("d" * 40) is not None
        assert service.outbox.get("c" * 40) is None and "b" * 40 not in service._es.docs
    finally:
        service.outbox.close()


def test_an_outbox_from_before_the_mirrors_backoff_opens_with_every_row_due(tmp_path):
    path = tmp_path / "old.sqlite3"
    with Outbox(path) as box:
        box.enqueue(alert("a", 0), ["ops"], 5.0)
    with sqlite3.connect(path) as conn:  # as the outbox was before
        for column in ("sync_attempts", "sync_next_at", "sync_error"):
            conn.execute(f"ALTER TABLE alerts DROP COLUMN {column}")
    with Outbox(path) as box:
        [row] = box.unsynced(0.0)
        assert row.sync_attempts == 0 and row.sync_error is None
        box.record_sync_failure(row.alert.idempotency_key, row.version, "refused", retry_at=60.0)
        assert box.unsynced(59.0) == [] and len(box.unsynced(60.0)) == 1
