"""An outbox row whose stored alert this release cannot read (a newer release's alert ``kind`` after a rollback, a
corrupted row) costs only itself: the delivery and mirror passes give it up, with the reason, and go on with the
others (alerts/outbox.py)."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from alerts.delivery import Dispatcher
from alerts.outbox import Outbox
from alerts.receiver import WebhookReceiver
from alerts.rules import parse_rules
from alerts.service import AlertService
from finsent.schemas import Alert
from finsent.settings import Settings

SECRET = "s" * 32
T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
BAD = f"{5:040d}"


class Index:
    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}

    def bulk(self, operations: list[dict], refresh: str) -> dict:
        for action, doc in zip(operations[::2], operations[1::2], strict=True):
            self.docs[action["index"]["_id"]] = doc
        return {"items": [{"index": {"_id": action["index"]["_id"], "status": 201}} for action in operations[::2]]}


class Producer:
    def send(self, topic: str, key: bytes, value: bytes) -> None:
        pass

    def flush(self, timeout: float) -> None:
        pass


def alert(i: int) -> Alert:
    return Alert(idempotency_key=f"{i:040d}", rule="shift", kind="sentiment_shift", ticker="AAPL", message=f"m{i}",
                 created_at=T0 + timedelta(minutes=i))


def spoil(path, key: str, sql: str = "json_set(alert, '$.kind', 'earnings_surprise')") -> None:
    """What a newer release (a kind this one does not know) or a broken disk leaves in the row."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE alerts SET alert = {sql} WHERE key = ?", (key,))


@pytest.fixture
def service(tmp_path):
    with WebhookReceiver(SECRET) as receiver, WebhookReceiver(SECRET) as team:
        rules = parse_rules({"rules": [{"name": "shift", "kind": "sentiment_shift", "threshold": 3}],
                             "webhooks": {"ops": {"url": receiver.url}, "team": {"url": team.url}}})
        service = AlertService(Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr(SECRET)), rules,
                               registry=CollectorRegistry(), clock=lambda: T0)
        service.outbox.start()
        service.dispatcher = Dispatcher(service.outbox, rules.webhooks, SECRET, service.metrics, pass_wait=30).start()
        service._es, service._producer, service.receivers = Index(), Producer(), (receiver, team)
        try:
            yield service
        finally:
            service.dispatcher.close()
            service.outbox.close()


def outbox_errors(service) -> float:
    return service.metrics.engine_errors.labels("outbox")._value.get()


def test_one_unreadable_row_is_given_up_and_every_other_is_delivered_and_mirrored(service, caplog):
    for i in range(11):
        service.outbox.enqueue(alert(i), ["ops", "team"], 0.0)
    spoil(service.outbox.path, BAD)
    with caplog.at_level(logging.ERROR, logger="alerts.outbox"):
        for _ in range(3):
            service.deliver_due()
            service.sync()
    for receiver in service.receivers:  # each webhook's queue goes on behind the row
        assert sorted(r.json()["idempotency_key"] for r in receiver.delivered) == [f"{i:040d}" for i in range(11)
                                                                                 if i != 5]
    assert sorted(service._es.docs) == [f"{i:040d}" for i in range(11) if i != 5]
    assert service.outbox.counts() == {"delivered": 20, "failed": 2}
    row = service.outbox.get(BAD)
    assert "kind" in row.reason and row.status == "failed" and row.attempts == 0  # an UnreadableRow
    assert "kind" in row.last_error and row.sync_error == row.last_error  # why, for `alerts list --outbox`
    assert service.outbox.unsynced() == [] and service.outbox.next_due() is None  # no pass meets it again
    assert outbox_errors(service) == 1
    assert service.metrics.engine_errors.labels("dispatch")._value.get() == 0
    assert len([r for r in caplog.records if BAD in r.getMessage()]) == 1 and "kind: Input should be" in caplog.text
    listed = {doc["idempotency_key"]: doc for doc in (r.listing() for r in service.outbox.list(limit=50))}
    assert len(listed) == 11 and listed[BAD]["status"] == "failed" and "kind" in listed[BAD]["message"]


def test_a_row_spoiled_after_its_delivery_is_given_up_by_the_mirror_alone(service):
    for i in range(3):
        service.outbox.enqueue(alert(i), ["ops"], 0.0)
    service.deliver_due()
    spoil(service.outbox.path, f"{1:040d}", sql="'{\"idempotency_key\": '")  # not even JSON
    assert service.sync() == 2 and sorted(service._es.docs) == [f"{0:040d}", f"{2:040d}"]
    row = service.outbox.get(f"{1:040d}")
    assert row.status == "delivered" and "JSON" in row.reason and row.sync_error == row.reason
    assert service.outbox.unsynced() == [] and outbox_errors(service) == 1


def test_a_repaired_row_is_delivered_by_alerts_retry(service):
    service.outbox.enqueue(alert(0), ["ops"], 0.0)
    spoil(service.outbox.path, f"{0:040d}")
    service.deliver_due()
    assert service.receivers[0].delivered == [] and service.outbox.get(f"{0:040d}").status == "failed"
    spoil(service.outbox.path, f"{0:040d}", sql="json_set(alert, '$.kind', 'sentiment_shift')")
    assert service.outbox.requeue_failed(0.0) == 1
    service.deliver_due()
    service.sync()
    assert [r.json()["idempotency_key"] for r in service.receivers[0].delivered] == [f"{0:040d}"]
    row = service.outbox.get(f"{0:040d}")
    assert row.alert.status == "delivered" and row.sync_error is None and outbox_errors(service) == 1


def two_rows_the_first_spoiled(tmp_path):
    """An outbox file of two alerts for "ops", the first of them unreadable."""
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as box:
        box.enqueue(alert(0), ["ops"], 0.0)
        box.enqueue(alert(1), ["ops"], 0.0)
    spoil(path, f"{0:040d}")
    return path


def test_an_outbox_without_a_listener_still_gives_the_row_up(tmp_path):
    path = two_rows_the_first_spoiled(tmp_path)
    with Outbox(path) as box:
        assert [d.key for d in box.due(10.0)] == [f"{1:040d}"]
        assert box.counts() == {"failed": 1, "pending": 1}


def test_alerts_list_outbox_shows_the_unreadable_row_with_its_reason(tmp_path):
    from typer.testing import CliRunner

    from finsent.cli import app

    path = two_rows_the_first_spoiled(tmp_path)
    result = CliRunner().invoke(app, ["alerts", "list", "--outbox", "--json"], env={"FINSENT_ALERTS_OUTBOX": str(path)})
    assert result.exit_code == 0, result.output
    listed = [orjson.loads(line) for line in result.output.splitlines()]
    assert [doc["idempotency_key"] for doc in listed] == [f"{1:040d}", f"{0:040d}"]  # newest first
    assert "kind: Input should be" in listed[1]["unreadable"] and listed[1]["status"] == "pending"
    table = CliRunner().invoke(app, ["alerts", "list", "--outbox"], env={"FINSENT_ALERTS_OUTBOX": str(path),
                                                                          "COLUMNS": "160"})
    assert table.exit_code == 0 and "stored alert not readable" in table.output, table.output
