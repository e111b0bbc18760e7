"""Outbox + dispatcher against a real local HTTP receiver (no Kafka or Elasticsearch needed).

Time for backoff is an injected clock, so retries happen without sleeping.
"""

from __future__ import annotations

import contextlib
import random
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerts import attempt_deadline, delivery, signing
from alerts.delivery import Dispatcher, backoff_delay
from alerts.metrics import AlertMetrics
from alerts.outbox import Outbox
from alerts.receiver import WebhookReceiver
from alerts.rules import Webhook
from finsent.schemas import Alert
from tests.ports import free_port
from tests.tcp_relay import pump

SECRET = "test-secret"
T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_alert(key="a" * 40, **kw):
    return Alert(**({"idempotency_key": key, "rule": "shift", "kind": "sentiment_shift", "ticker": "AAPL",
                     "window": "15m", "window_start": T0, "message": "AAPL fell", "created_at": T0} | kw))


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "outbox.sqlite3") as box:
        yield box


def dispatcher(outbox, hooks, wall, registry=None, dead=None, pass_wait=30.0):
    """A pass waits for every webhook (up to 30 s) unless told otherwise: tests read its outcome right after."""
    registry = registry or CollectorRegistry()
    return Dispatcher(outbox, hooks, SECRET, AlertMetrics(registry), clock=wall, rng=random.Random(7),
                      on_dead=(lambda a, w, e: dead.append((a.idempotency_key, w, e))) if dead is not None else None,
                      pass_wait=pass_wait).start()


def test_backoff_grows_is_capped_and_jittered():
    rng, hook = random.Random(1), Webhook(url="http://x/y", backoff_initial="2s", backoff_max="60s")
    delays = [backoff_delay(hook, n, rng) for n in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        step = min(60, 2 * 2 ** (n - 1))
        assert step / 2 <= delay <= step
    assert len({round(backoff_delay(hook, 3, rng), 6) for _ in range(20)}) > 1
    assert 30 <= backoff_delay(hook, 100_000, rng) <= 60  # a day of retries: no float overflow


def test_enqueue_is_idempotent(outbox):
    assert outbox.enqueue(make_alert(), ["ops"], 0) is True
    assert outbox.enqueue(make_alert(message="again"), ["ops"], 0) is False
    assert outbox.counts() == {"pending": 1}
    assert outbox.get("a" * 40).alert.message == "AAPL fell"
    with pytest.raises(ValueError, match="no webhook"):  # it would be stored as delivered to no one
        outbox.enqueue(make_alert(key="b" * 40), [], 0)
    assert outbox.get("b" * 40) is None


def test_delivered_once_with_valid_signature(outbox):
    wall, registry = Wall(), CollectorRegistry()
    with WebhookReceiver(SECRET) as receiver:
        sender = dispatcher(outbox, {"ops": Webhook(url=receiver.url)}, wall, registry)
        outbox.enqueue(make_alert(), ["ops"], wall())
        assert sender.deliver_due() == 1
        assert sender.deliver_due() == 0
        sender.close()
    [got] = receiver.received
    assert got.verified and not got.duplicate
    assert got.headers[signing.IDEMPOTENCY_HEADER] == "a" * 40
    assert got.json()["message"] == "AAPL fell"
    row = outbox.get("a" * 40)
    assert row.alert.status == "delivered" and row.alert.attempts == 1 and row.delivered_at is not None
    assert registry.get_sample_value("finsent_alerts_sent_total", {"webhook": "ops"}) == 1
    assert registry.get_sample_value("finsent_alerts_delivery_latency_seconds_count", {"webhook": "ops"}) == 1


def test_a_webhook_worker_that_fails_outside_an_attempt_is_counted(outbox):
    wall, registry = Wall(), CollectorRegistry()
    sender = dispatcher(outbox, {"ops": Webhook(url="http://127.0.0.1:9/hook")}, wall, registry)

    def broken(item):  # the outbox cannot be written, say
        raise OSError("disk I/O error")

    sender.attempt = broken
    outbox.enqueue(make_alert(), ["ops"], wall())
    sender.deliver_due()
    sender.close()
    assert registry.get_sample_value("finsent_alerts_engine_errors_total", {"stage": "dispatch"}) == 1


def test_receiver_down_then_up_delivers_once_with_the_same_key(outbox):
    wall, port = Wall(), free_port()
    hook = Webhook(url=f"http://127.0.0.1:{port}/hook", timeout=2, backoff_initial="1s", backoff_max="8s")
    sender = dispatcher(outbox, {"ops": hook}, wall)
    outbox.enqueue(make_alert(), ["ops"], wall())
    assert sender.deliver_due() == 1  # connection refused
    row = outbox.get("a" * 40)
    assert row.alert.status == "pending" and row.alert.attempts == 1 and "ConnectError" in row.last_error
    assert sender.deliver_due() == 0  # not due before the backoff
    receiver = WebhookReceiver(SECRET, port=port, status=503).start()  # up, but the app fails
    try:
        wall.now += 1
        assert sender.deliver_due() == 1
        receiver.status = 200
        wall.now += 4
        assert sender.deliver_due() == 1
        wall.now += 100
        assert sender.deliver_due() == 0
    finally:
        receiver.stop()
        sender.close()
    assert len(receiver.received) == 2
    assert {r.headers[signing.IDEMPOTENCY_HEADER] for r in receiver.received} == {"a" * 40}
    assert len({r.body for r in receiver.received}) == 1  # the same bytes on every attempt
    assert [r.headers["X-Finsent-Attempt"] for r in receiver.received] == ["2", "3"]
    assert len(receiver.delivered) == 1
    row = outbox.get("a" * 40)
    assert row.alert.status == "delivered" and row.alert.attempts == 3 and row.last_error is None


def test_dead_letter_after_max_attempts_and_requeue(outbox):
    wall, dead, registry = Wall(), [], CollectorRegistry()
    with WebhookReceiver(SECRET, status=500) as receiver:
        hook = Webhook(url=receiver.url, max_attempts=3, backoff_initial="1s", backoff_max="1s")
        sender = dispatcher(outbox, {"ops": hook}, wall, registry, dead)
        outbox.enqueue(make_alert(), ["ops"], wall())
        for _ in range(5):
            sender.deliver_due()
            wall.now += 10
        assert len(receiver.received) == 3
        row = outbox.get("a" * 40)
        assert row.alert.status == "failed" and row.alert.attempts == 3 and "HTTP 500" in row.last_error
        assert dead == [("a" * 40, "ops", row.last_error)]
        assert registry.get_sample_value("finsent_alerts_failed_total", {"webhook": "ops"}) == 1
        # An operator fixes the receiver and requeues the dead letter.
        receiver.status = 200
        assert outbox.requeue_failed(wall()) == 1
        assert outbox.get("a" * 40).alert.status == "pending"
        sender.deliver_due()
        sender.close()
    assert outbox.get("a" * 40).alert.status == "delivered"
    assert len(receiver.delivered) == 1


def test_gone_is_permanent_and_unknown_webhook_is_dead(outbox):
    wall, dead = Wall(), []
    with WebhookReceiver(SECRET, status=410) as receiver:
        sender = dispatcher(outbox, {"ops": Webhook(url=receiver.url)}, wall, dead=dead)
        outbox.enqueue(make_alert(), ["ops", "removed"], wall())
        assert sender.deliver_due() == 2
        sender.close()
    assert len(receiver.received) == 1
    assert {(w, e.split(":")[0]) for _, w, e in dead} == {("ops", "HTTP 410"), ("removed", "webhook 'removed' is not in the rules file any more")}
    assert outbox.get("a" * 40).alert.status == "failed"


def test_two_webhooks_status_waits_for_both(outbox):
    wall = Wall()
    with WebhookReceiver(SECRET) as good, WebhookReceiver(SECRET, status=503) as bad:
        sender = dispatcher(outbox, {"good": Webhook(url=good.url),
                                     "bad": Webhook(url=bad.url, format="slack", backoff_initial="1s")}, wall)
        outbox.enqueue(make_alert(), ["good", "bad"], wall())
        sender.deliver_due()
        assert outbox.get("a" * 40).alert.status == "pending"
        bad.status = 200
        wall.now += 5
        sender.deliver_due()
        sender.close()
    assert outbox.get("a" * 40).alert.status == "delivered"
    assert "blocks" in bad.delivered[0].json() and "idempotency_key" in good.delivered[0].json()


def test_bad_signature_is_refused_by_the_receiver(outbox):
    wall = Wall()
    with WebhookReceiver("another-secret") as receiver:
        sender = dispatcher(outbox, {"ops": Webhook(url=receiver.url, max_attempts=1)}, wall)
        outbox.enqueue(make_alert(), ["ops"], wall())
        sender.deliver_due()
        sender.close()
    assert receiver.delivered == [] and "does not match" in receiver.received[0].error
    assert outbox.get("a" * 40).alert.status == "failed"


def test_outbox_survives_reopen_and_remembers_cooldowns(tmp_path):
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as box:
        box.enqueue(make_alert(), ["ops"], 5.0)
        box.enqueue(make_alert(key="c" * 40, created_at=T0 + timedelta(minutes=5)), ["ops"], 5.0)
    with Outbox(path) as box:
        [a, c] = sorted(box.due(10.0), key=lambda d: d.key)
        assert a.alert.idempotency_key == "a" * 40 and a.attempts == 0 and c.webhook == "ops"
        assert box.last_fired() == [("shift", "AAPL", T0 + timedelta(minutes=5))]
        assert set(box.recent_keys()) == {"a" * 40, "c" * 40}
        assert box.next_due() == 5.0
        rows = box.unsynced()
        assert len(rows) == 2 and rows[0].document()["status"] == "pending"
        box.mark_synced(rows[0].alert.idempotency_key, rows[0].version)
        assert len(box.unsynced()) == 1


def test_prune_forgets_old_delivered_mirrored_alerts_only(outbox):
    def add(key, minutes, *, ticker="AAPL", delivered=True, synced=True, failed=False):
        outbox.enqueue(make_alert(key=key * 40, ticker=ticker, created_at=T0 + timedelta(minutes=minutes)), ["ops"], 0.0)
        if delivered or failed:
            outbox.record_attempt(key * 40, "ops", ok=delivered, error=None if delivered else "gone", at=T0,
                                  retry_at=None)
        if synced:
            row = outbox.get(key * 40)
            outbox.mark_synced(key * 40, row.version)

    add("a", 0)                     # old, delivered, mirrored: forgotten
    add("b", 1, synced=False)       # not mirrored yet
    add("c", 2, delivered=False)    # still pending
    add("d", 3, delivered=False, failed=True)  # dead-lettered: kept for a requeue
    add("e", 4, ticker="MSFT")      # the newest MSFT alert: it re-arms that cooldown
    add("f", 60)                    # newer than the cut
    assert outbox.prune(T0 + timedelta(minutes=30)) == 1
    assert outbox.get("a" * 40) is None and not [d for d in outbox.due(1e9) if d.key == "a" * 40]
    assert all(outbox.get(k * 40) is not None for k in "bcdef")
    assert ("shift", "MSFT", T0 + timedelta(minutes=4)) in outbox.last_fired()
    assert outbox.prune(T0 + timedelta(days=1)) == 0  # f is now the newest AAPL alert


def test_engine_refuses_to_start_without_a_secret(tmp_path):
    from alerts.rules import parse_rules
    from alerts.service import AlertsConfigError, AlertService
    from finsent.settings import Settings

    rules = parse_rules({"webhooks": {"ops": {"url": "http://127.0.0.1:9/x"}}, "rules": [{"name": "d", "kind": "drift"}]})
    with pytest.raises(AlertsConfigError, match="FINSENT_ALERTS_WEBHOOK_SECRET is not set"):
        AlertService(Settings(state_dir=tmp_path), rules, registry=CollectorRegistry())


def test_a_down_receiver_is_probed_once_per_backoff_not_once_per_alert(outbox):
    wall, port = Wall(), free_port()
    with WebhookReceiver(SECRET) as healthy:
        hooks = {"down": Webhook(url=f"http://127.0.0.1:{port}/hook", backoff_initial="4s"),
                 "up": Webhook(url=healthy.url)}
        sender = dispatcher(outbox, hooks, wall)
        for i in range(3):
            outbox.enqueue(make_alert(key=f"{i}" * 40), ["down", "up"], wall())
        assert sender.deliver_due() == 4  # three to the healthy receiver, one probe of the dead one
        assert len(healthy.delivered) == 3
        attempts = sorted(outbox.get(f"{i}" * 40).alert.attempts for i in range(3))
        assert attempts == [1, 1, 2]  # the other two waited without spending an attempt
        assert sender.deliver_due() == 0  # everything for "down" now waits for the probe's retry time
        wall.now += 4
        assert sender.deliver_due() == 1
        sender.close()


def test_a_webhook_that_cannot_be_sent_to_fails_alone(outbox):
    # Built past validation, as by an older rules file: sending raises UnicodeError (IDNA) and
    # UnicodeEncodeError (header), neither an httpx error.
    wall, dead, registry = Wall(), [], CollectorRegistry()
    once = {"max_attempts": 2, "backoff_initial": timedelta(seconds=1), "backoff_max": timedelta(seconds=1)}
    with WebhookReceiver(SECRET) as good:
        hooks = {"host": Webhook.model_construct(url="https://hooks..example.com/x", **once),
                 "header": Webhook.model_construct(url=good.url, headers={"X-Token": "café"}, **once),
                 "good": Webhook(url=good.url)}
        sender = dispatcher(outbox, hooks, wall, registry, dead)
        for i in range(120):
            outbox.enqueue(make_alert(key=f"{i:040d}"), ["host", "header"], wall())
        outbox.enqueue(make_alert(key="g" * 40), ["good"], wall() + 1)
        wall.now += 5
        for _ in range(5):
            sender.deliver_due(limit=100)
            wall.now += 10
        sender.close()
    assert [r.headers[signing.IDEMPOTENCY_HEADER] for r in good.delivered] == ["g" * 40]
    assert outbox.get("g" * 40).alert.status == "delivered"
    row = outbox.get("0" * 40)
    assert row.alert.status == "failed" and row.alert.attempts == 4
    assert {(w, e.split(":")[0]) for k, w, e in dead if k == "0" * 40} == {
        ("host", "UnicodeError"), ("header", "UnicodeEncodeError")}
    assert registry.get_sample_value("finsent_alerts_failed_total", {"webhook": "host"}) >= 1


def test_a_stopping_engine_starts_no_further_attempt_and_the_rest_stay_due(outbox):
    wall, stopping = Wall(), threading.Event()
    with WebhookReceiver(SECRET, on_receive=lambda _: stopping.set()) as receiver:
        sender = dispatcher(outbox, {"ops": Webhook(url=receiver.url)}, wall)
        for n in range(5):
            outbox.enqueue(make_alert(key=str(n) * 40), ["ops"], wall())
        assert sender.deliver_due(should_stop=stopping.is_set) == 1  # the one in flight when the stop came
        assert len(receiver.received) == 1 and outbox.counts() == {"pending": 4, "delivered": 1}
        assert sender.deliver_due() == 4  # after a restart
        sender.close()
    assert len(receiver.delivered) == 5


class Trickle(socketserver.StreamRequestHandler):
    """Answers a byte of its status line and headers every 0.2 s, for a minute: never a read timeout."""

    def handle(self) -> None:
        while self.rfile.readline().strip():  # the request's headers; its body is left unread
            pass
        for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"." * 300:
            try:
                self.wfile.write(bytes([byte]))
            except OSError:
                return  # the client hung up
            time.sleep(0.2)


@contextlib.contextmanager
def tcp_receiver(handler: type[socketserver.BaseRequestHandler]) -> Iterator[str]:
    """A local TCP server whose every connection ``handler`` serves (a receiver that misbehaves); yields a hook URL."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/hook"
        finally:
            server.shutdown()


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_webhook_timeout(outbox):
    wall = Wall()
    with tcp_receiver(Trickle) as url:
        sender = dispatcher(outbox, {"ops": Webhook(url=url, timeout=1)}, wall)
        outbox.enqueue(make_alert(), ["ops"], wall())
        delivering = threading.Thread(target=sender.deliver_due)
        delivering.start()
        delivering.join(30)  # httpx's timeout is per read: the pass held on for the whole minute
        sender.close()
    assert not delivering.is_alive()
    row = outbox.get("a" * 40)
    assert row.alert.status == "pending" and row.alert.attempts == 1
    assert row.last_error.startswith("AttemptTimedOut: no complete answer within 1 s")


class Silent(socketserver.StreamRequestHandler):
    """Reads the request's headers and never answers (until the client hangs up)."""

    def handle(self) -> None:
        while self.rfile.readline().strip():
            pass
        while self.rfile.read1(4096):  # the body, then nothing until the client hangs up
            pass


class LateDeadline(attempt_deadline.AttemptDeadline):
    """A deadline whose thread runs late, as on a loaded machine: httpx's read timeout fires first."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds + 30)


def test_httpx_timing_out_before_the_deadline_thread_runs_is_the_attempt_timing_out(outbox, monkeypatch):
    monkeypatch.setattr(delivery, "AttemptDeadline", LateDeadline)
    wall = Wall()
    with tcp_receiver(Silent) as url:
        sender = dispatcher(outbox, {"ops": Webhook(url=url, timeout=0.5)}, wall)
        outbox.enqueue(make_alert(), ["ops"], wall())
        sender.deliver_due()
        sender.close()
    row = outbox.get("a" * 40)
    assert row.alert.status == "pending" and row.alert.attempts == 1
    assert row.last_error.startswith("AttemptTimedOut: no complete answer within 0.5 s"), row.last_error


TLS = Path(__file__).parents[1] / "tls"


class TlsServer(socketserver.ThreadingTCPServer):
    """The trickling receiver over TLS, with the test certificate in tests/tls."""

    daemon_threads = True

    def __init__(self, handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(TLS / "localhost-cert.pem", TLS / "localhost-key.pem")

    def get_request(self):
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


class Tunnel(socketserver.BaseRequestHandler):
    """An HTTP proxy's CONNECT: the bytes of both ways passed through unread."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.request.recv(4096)
        self.server.tunnels.append(head.split()[1].decode())
        host, port = head.split()[1].decode().rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            threading.Thread(target=pump, args=(upstream, self.request), daemon=True).start()
            pump(self.request, upstream)


def test_an_https_receiver_behind_a_proxy_that_trickles_is_cut_off_too(outbox, monkeypatch):
    # TLS through a CONNECT tunnel wraps the socket the attempt connected (to the proxy): the deadline
    # must still end the connection.
    wall = Wall()
    with TlsServer(Trickle) as receiver, socketserver.ThreadingTCPServer(("127.0.0.1", 0), Tunnel) as proxy:
        proxy.daemon_threads, proxy.tunnels = True, []
        for server in (receiver, proxy):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        # httpx reads both when the dispatcher starts its client.
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "localhost-cert.pem"))
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        hook = Webhook(url=f"https://127.0.0.1:{receiver.server_address[1]}/hook", timeout=1)
        sender = dispatcher(outbox, {"ops": hook}, wall)
        outbox.enqueue(make_alert(), ["ops"], wall())
        delivering = threading.Thread(target=sender.deliver_due)
        delivering.start()
        delivering.join(30)
        for server in (receiver, proxy):
            server.shutdown()
        sender.close()
    assert proxy.tunnels == [f"127.0.0.1:{receiver.server_address[1]}"]
    assert not delivering.is_alive()
    row = outbox.get("a" * 40)
    assert row.last_error.startswith("AttemptTimedOut: no complete answer within 1 s"), row.last_error


def test_every_configured_webhook_has_its_series_at_zero_from_the_start(tmp_path):
    # A series born at 1 shows no increase(): the first dead letter after a restart would page no one.
    from pydantic import SecretStr

    from alerts.rules import parse_rules
    from alerts.service import AlertService
    from finsent.settings import Settings

    rules = parse_rules({"webhooks": {"ops": {"url": "http://127.0.0.1:9/x"}, "pager": {"url": "http://p/x"}},
                         "rules": [{"name": "d", "kind": "drift"}]})
    registry = CollectorRegistry()
    AlertService(Settings(state_dir=tmp_path, alerts_webhook_secret=SecretStr("s")), rules, registry=registry)
    for webhook in ("ops", "pager"):
        labels = {"webhook": webhook}
        assert registry.get_sample_value("finsent_alerts_failed_total", labels) == 0
        assert registry.get_sample_value("finsent_alerts_sent_total", labels) == 0
        assert registry.get_sample_value("finsent_alerts_attempts_total", labels | {"outcome": "error"}) == 0
        assert registry.get_sample_value("finsent_alerts_delivery_latency_seconds_count", labels) == 0
    assert registry.get_sample_value("finsent_alerts_raised_total", {"rule": "d", "kind": "drift"}) == 0


class Flood(socketserver.StreamRequestHandler):
    """Answers 500 with a 64 MiB body; counts what the client took before it hung up."""

    sent: list[int] = []

    def handle(self) -> None:
        while self.rfile.readline().strip():
            pass
        chunk, sent = b"x" * (1 << 20), 0
        try:
            self.wfile.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % (64 * len(chunk)))
            for _ in range(64):
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the client hung up
        Flood.sent.append(sent)


def test_only_the_head_of_a_receivers_answer_is_read(outbox):
    wall = Wall()
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Flood) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sender = dispatcher(outbox, {"ops": Webhook(url=f"http://127.0.0.1:{server.server_address[1]}/h")}, wall)
        outbox.enqueue(make_alert(), ["ops"], wall())
        assert sender.attempt(outbox.due(wall(), 1)[0]) == "retry"
        sender.close()
        server.shutdown()
    assert outbox.get("a" * 40).last_error == "HTTP 500: " + "x" * 200
    assert Flood.sent and Flood.sent[0] < 32 << 20  # the client hung up after its head, long before the end


def test_a_webhook_with_its_own_secret_is_signed_with_it(outbox):
    own = "0123456789abcdef-ops"
    wall = Wall()
    with WebhookReceiver(own) as ops, WebhookReceiver(SECRET) as shared:
        hooks = {"ops": Webhook(url=ops.url, secret=own), "shared": Webhook(url=shared.url)}
        sender = dispatcher(outbox, hooks, wall)
        outbox.enqueue(make_alert(), ["ops", "shared"], wall())
        assert sender.deliver_due() == 2
        sender.close()
    assert len(ops.delivered) == 1 and len(shared.delivered) == 1  # each verified with its own key


def test_the_shared_secret_is_needed_only_by_webhooks_without_their_own(tmp_path):
    from alerts.rules import parse_rules
    from alerts.service import AlertsConfigError, webhook_secret
    from finsent.settings import Settings

    own = {"url": "http://127.0.0.1:9/x", "secret": "0123456789abcdef"}
    settings = Settings(state_dir=tmp_path)
    own_only = parse_rules({"webhooks": {"a": own}, "rules": [{"name": "d", "kind": "drift"}]})
    assert webhook_secret(settings, own_only) == ""
    rules = parse_rules({"webhooks": {"a": own, "b": {"url": "http://127.0.0.1:9/y"}},
                         "rules": [{"name": "d", "kind": "drift"}]})
    with pytest.raises(AlertsConfigError, match=r"webhook\(s\) b have no secret of their own"):
        webhook_secret(settings, rules)


def test_a_receiver_down_for_an_hour_gets_every_alert_once_it_is_back(outbox):
    # The default webhook: 8 attempts from 2 s used to give up after ~4 minutes, whatever backoff_max said.
    wall, dead, port = Wall(), [], free_port()
    sender = dispatcher(outbox, {"ops": Webhook(url=f"http://127.0.0.1:{port}/hook")}, wall, dead=dead)
    start = wall.now
    for minute in range(0, 60, 10):
        outbox.enqueue(make_alert(key=f"{minute:02d}" * 20, created_at=T0 + timedelta(minutes=minute)), ["ops"],
                       wall())
        for _ in range(60):  # ten minutes of passes every 10 s
            sender.deliver_due()
            wall.now += 10
    assert dead == [] and outbox.counts() == {"pending": 6}
    with WebhookReceiver(SECRET, port=port) as receiver:
        while outbox.counts().get("pending") and wall.now < start + 3600 + 600:  # backoff_max is 10 minutes
            sender.deliver_due()
            wall.now += 10
        sender.close()
    assert [r.json()["idempotency_key"][:2] for r in receiver.delivered] == ["00", "10", "20", "30", "40", "50"]
    assert outbox.counts() == {"delivered": 6}


def test_a_delivery_is_given_up_at_give_up_after_and_a_requeue_restarts_the_clock(outbox):
    wall, dead = Wall(), []
    with WebhookReceiver(SECRET, status=500) as receiver:
        hook = Webhook(url=receiver.url, give_up_after="60s", backoff_initial="25s", backoff_max="25s",
                       max_attempts=100)  # whichever comes first: the time
        sender = dispatcher(outbox, {"ops": hook}, wall, dead=dead)
        outbox.enqueue(make_alert(), ["ops"], wall())
        start, tried_at = wall.now, []
        while not dead:
            if sender.deliver_due():
                tried_at.append(wall.now - start)
            wall.now += 1
        assert tried_at[-1] == 60  # the last retry at the deadline, not up to backoff_max past it
        assert len(tried_at) == len(receiver.received) and all(t < 60 for t in tried_at[:-1])
        assert outbox.get("a" * 40).alert.status == "failed"
        assert outbox.requeue_failed(wall()) == 1
        assert sender.deliver_due() == 1
        sender.close()
    assert outbox.get("a" * 40).alert.status == "pending"  # 60 s from the requeue, not from the first try


def test_max_attempts_when_set_still_ends_retries_first(outbox):
    wall, dead = Wall(), []
    with WebhookReceiver(SECRET, status=503) as receiver:
        sender = dispatcher(outbox, {"ops": Webhook(url=receiver.url, max_attempts=2)}, wall, dead=dead)
        outbox.enqueue(make_alert(), ["ops"], wall())
        for _ in range(3):
            sender.deliver_due()
            wall.now += 5
        sender.close()
    assert len(receiver.received) == 2 and [key for key, _, _ in dead] == ["a" * 40]


def test_a_retried_alert_is_not_overtaken_by_a_newer_one(outbox):
    # The receiver's last word on AAPL must be the newest alert, B, not A's retry.
    wall = Wall()
    with WebhookReceiver(SECRET, status=503) as receiver:
        sender = dispatcher(outbox, {"ops": Webhook(url=receiver.url)}, wall)
        outbox.enqueue(make_alert(key="a" * 40, message="A fell"), ["ops"], wall())
        assert sender.deliver_due() == 1  # 503: A waits for its retry
        receiver.status = 200
        wall.now += 1
        outbox.enqueue(make_alert(key="b" * 40, message="B rose", created_at=T0 + timedelta(minutes=15)), ["ops"],
                       wall())
        assert sender.deliver_due() == 0  # B is due, but waits behind A
        for _ in range(10):
            wall.now += 1
            sender.deliver_due()
        sender.close()
    assert [r.json()["message"] for r in receiver.received] == ["A fell", "A fell", "B rose"]
    assert outbox.counts() == {"delivered": 2}


class Picky(WebhookReceiver):
    """Refuses, as Slack does a malformed block, any alert whose message says "malformed"."""

    def _accept(self, path, headers, body):
        code, record = super()._accept(path, headers, body)
        return (400 if b"malformed" in body else code), record


def test_an_alert_the_receiver_refuses_for_what_it_is_does_not_hold_its_queue_for_a_day(outbox):
    from alerts.delivery import REFUSED_CONTENT_TRIES

    wall, dead = Wall(), []
    with Picky(SECRET) as receiver:
        sender = dispatcher(outbox, {"ops": Webhook(url=receiver.url, backoff_initial="1s")}, wall, dead=dead)
        outbox.enqueue(make_alert(key="a" * 40, message="A malformed"), ["ops"], wall())
        outbox.enqueue(make_alert(key="b" * 40, message="B fell"), ["ops"], wall())
        for _ in range(REFUSED_CONTENT_TRIES + 2):
            sender.deliver_due()
            wall.now += 60
        sender.close()
    assert [r.json()["message"] for r in receiver.received] == ["A malformed"] * REFUSED_CONTENT_TRIES + ["B fell"]
    assert [(key[0], hook) for key, hook, _ in dead] == [("a", "ops")] and "HTTP 400" in dead[0][2]
    assert outbox.counts() == {"delivered": 1, "failed": 1}


def test_each_webhook_is_a_queue_that_a_dead_letter_does_not_block(outbox):
    def add(key, webhooks=("ops",), now=10.0):
        outbox.enqueue(make_alert(key=key * 40), list(webhooks), now)

    add("a", ["ops", "pager"])
    add("b")
    add("c")
    assert [d.key[0] for d in outbox.due(10.0) if d.webhook == "ops"] == ["a", "b", "c"]
    outbox.record_attempt("a" * 40, "ops", ok=False, error="HTTP 503", at=T0, retry_at=50.0)
    assert [(d.key[0], d.webhook) for d in outbox.due(20.0)] == [("a", "pager")]  # b and c wait behind a
    assert outbox.next_due() == 10.0  # pager's a
    outbox.record_attempt("a" * 40, "pager", ok=True, error=None, at=T0, retry_at=None)
    assert outbox.next_due() == 50.0  # not b's 10.0: it waits for a
    add("d", now=20.0)
    assert [d.key[0] for d in outbox.due(50.0)] == ["a", "b", "c", "d"]
    assert [d.key[0] for d in outbox.due(50.0, limit=2)] == ["a", "b"]
    outbox.record_attempt("a" * 40, "ops", ok=False, error="HTTP 410", at=T0, retry_at=None)  # dead
    assert [d.key[0] for d in outbox.due(20.0)] == ["b", "c"]  # d, stored while a waited, is due at a's 50.0
    assert outbox.requeue_failed(60.0) == 1  # a again: first in line, as it was raised first
    assert [d.key[0] for d in outbox.due(60.0)] == ["a", "b", "c", "d"]


def test_due_is_limited_per_webhook_and_skips_busy_ones(outbox):
    for i in range(5):
        outbox.enqueue(make_alert(key=f"{i}" * 40), ["ops"], 1.0)
    outbox.enqueue(make_alert(key="p" * 40), ["pager"], 2.0)
    assert [(d.webhook, d.key[0]) for d in outbox.due(5.0, limit=2)] == [("ops", "0"), ("ops", "1"), ("pager", "p")]
    assert [d.webhook for d in outbox.due(5.0, skip=["ops"])] == ["pager"]


def test_a_slow_webhook_holds_up_neither_the_others_nor_the_next_pass(outbox):
    wall, stopping = Wall(), threading.Event()
    with WebhookReceiver(SECRET, on_receive=lambda _: time.sleep(0.3)) as slow, WebhookReceiver(SECRET) as pager:
        sender = dispatcher(outbox, {"ops": Webhook(url=slow.url), "pager": Webhook(url=pager.url)}, wall,
                            pass_wait=0.1)
        for i in range(20):  # six seconds of work for ops
            outbox.enqueue(make_alert(key=f"{i:02d}" * 20), ["ops"], wall())
        sender.deliver_due()
        outbox.enqueue(make_alert(key="p" * 40), ["pager"], wall())  # raised while ops is busy
        started = time.monotonic()
        while not pager.delivered and time.monotonic() - started < 5:
            sender.deliver_due(should_stop=stopping.is_set)
        took = time.monotonic() - started
        pending_ops = outbox.counts().get("pending", 0)
        stopping.set()
        sender.deliver_due(should_stop=stopping.is_set)  # waits for the attempt in flight only
        sender.close()
    assert len(pager.delivered) == 1 and took < 1.5, took
    assert pending_ops >= 10  # ops was still working through its queue
    assert len(slow.delivered) < 20 and outbox.counts()["pending"] == 20 - len(slow.delivered)


def test_an_outbox_from_before_give_up_after_counts_from_the_next_attempt(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with Outbox(path) as box:
        box.enqueue(make_alert(), ["ops"], 5.0)
    with sqlite3.connect(path) as conn:  # as the outbox was before give_up_after
        conn.execute("ALTER TABLE deliveries DROP COLUMN queued_at")
        conn.execute("UPDATE deliveries SET next_attempt_at = 42.0")
    with Outbox(path) as box:
        [due] = box.due(100.0)
    assert due.queued_at == 42.0
