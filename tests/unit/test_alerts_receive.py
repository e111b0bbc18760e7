"""The reference receiver: `finsent alerts receive` listens where `finsent up`'s rules deliver
(FINSENT_RECEIVER_PORT unless told); it dedupes on the signed key and bounds what it reads and keeps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from alerts import signing
from alerts.receiver import KEPT_RECORDS, KEPT_REJECTED_BYTES, MAX_BODY_BYTES, WebhookReceiver
from finsent.services.process import port_in_use
from tests.ports import free_port
from tests.waiting import wait_for

FINSENT = str(Path(sys.executable).parent / "finsent")


def test_the_receiver_listens_on_the_receiver_port_setting(tmp_path):
    port = free_port()
    env = os.environ | {"FINSENT_RECEIVER_PORT": str(port), "FINSENT_ALERTS_WEBHOOK_SECRET": "s3cret",
                        "FINSENT_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([FINSENT, "alerts", "receive"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: port_in_use(port) or proc.poll() is not None, 60, "the receiver's port")
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"listening on http://127.0.0.1:{port}" in err


def signed(body: bytes, secret: str = "s3cret", **headers: str) -> dict[str, str]:
    return {"Content-Type": "application/json", signing.SIGNATURE_HEADER: signing.sign(secret, body)} | headers


BODY = b'{"idempotency_key":"abc","rule":"r","message":"sell AAPL"}'


def test_a_replay_with_another_or_no_idempotency_header_is_not_processed_again():
    with WebhookReceiver("s3cret") as receiver:
        first = httpx.post(receiver.url, content=BODY, headers=signed(BODY, **{signing.IDEMPOTENCY_HEADER: "abc"}))
        other = httpx.post(receiver.url, content=BODY, headers=signed(BODY, **{signing.IDEMPOTENCY_HEADER: "evil"}))
        bare = httpx.post(receiver.url, content=BODY, headers=signed(BODY))
    assert first.status_code == 200 and not first.json()["duplicate"]
    assert other.status_code == 400 and "disagrees with the body" in other.json()["error"]
    assert bare.status_code == 200 and bare.json()["duplicate"]
    assert len(receiver.delivered) == 1


def test_a_body_without_the_key_is_deduplicated_on_the_header():
    slack = b'{"text": "[finsent] r: sell AAPL"}'
    with WebhookReceiver("s3cret") as receiver:
        for _ in range(2):
            httpx.post(receiver.url, content=slack, headers=signed(slack, **{signing.IDEMPOTENCY_HEADER: "k"}))
    assert [r.duplicate for r in receiver.received] == [False, True]


def raw_post(receiver: WebhookReceiver, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("length,status", [
    (b"abc", b"400"), (b"-1", b"400"), (b"\xc2\xb2", b"400"), (b"1_0", b"400"),
    (str(MAX_BODY_BYTES + 1).encode(), b"413"),
])
def test_a_content_length_that_is_not_a_size_or_too_big_is_refused_unread(length, status):
    with WebhookReceiver("s3cret") as receiver:
        answer = raw_post(receiver, b"Content-Length: " + length + b"\r\n", b"{}")
        assert answer.startswith(b"HTTP/1.0 " + status)
        assert httpx.post(receiver.url, content=BODY, headers=signed(BODY)).status_code == 200  # still serving
    assert [r.verified for r in receiver.received] == [False, True]


def test_a_signature_with_bytes_outside_ascii_is_refused_and_the_receiver_goes_on():
    # http.server reads headers as Latin-1: "\xe9" arrives as "é", which compare_digest refused to compare as text,
    # so the request ended in a traceback and a dropped connection instead of a 401.
    with WebhookReceiver("s3cret") as receiver:
        head = signing.sign("s3cret", BODY).encode()[:-1] + b"\xe9"
        answer = raw_post(receiver, signing.SIGNATURE_HEADER.encode() + b": " + head + b"\r\n"
                          + b"Content-Length: " + str(len(BODY)).encode() + b"\r\nConnection: close\r\n", BODY)
        assert answer.startswith(b"HTTP/1.0 401")
        assert httpx.post(receiver.url, content=BODY, headers=signed(BODY)).status_code == 200
    assert [(r.verified, r.error) for r in receiver.received] == [
        (False, "signature does not match the body"), (True, None)]


def test_remembered_keys_are_bounded_in_number_and_time(monkeypatch):
    import alerts.receiver

    now = [1000.0]
    monkeypatch.setattr(alerts.receiver.time, "monotonic", lambda: now[0])
    receiver = WebhookReceiver("s3cret", max_keys=2, key_ttl=60)

    def send(key: str) -> bool:
        body = b'{"idempotency_key": "%s"}' % key.encode()
        code, record = receiver._accept("/hook", signed(body), body)
        assert code == 200
        return record.duplicate

    assert [send(k) for k in ("a", "b", "a", "c")] == [False, False, True, False]
    assert list(receiver._keys) == ["b", "c"]  # "a", the oldest, made room
    now[0] += 61
    assert send("c") is False and list(receiver._keys) == ["c"]  # expired, then processed anew


def test_the_received_requests_kept_are_bounded():
    receiver = WebhookReceiver("s3cret")
    for _ in range(KEPT_RECORDS + 5):
        receiver._accept("/hook", {}, b"x" * 10_000)  # unsigned: anyone can send these
    assert len(receiver.received) == KEPT_RECORDS
    assert {len(r.body) for r in receiver.received} == {KEPT_REJECTED_BYTES}
