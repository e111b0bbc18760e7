"""A reference webhook receiver: verifies signatures, drops repeated idempotency keys, keeps what
arrived. ``finsent alerts receive`` runs it for local development; tests use it as the real
HTTP server that the engine delivers to. Standard library only, like ``alerts.signing``.

The idempotency key it dedupes on is the one in the signed JSON body (``idempotency_key``): the
header is not signed, so a replay within the tolerance with the header changed or removed would
otherwise be processed again. A header that disagrees with the body is refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alerts import signing

MAX_BODY_BYTES = 1 << 20  # finsent's bodies are a few KiB; a bigger one is refused unread (413)
KEPT_RECORDS = 1000  # ``received`` keeps the latest requests only: the receiver may run for weeks
KEPT_REJECTED_BYTES = 4096  # of a refused request's body: anyone can send one


class BadRequest(ValueError):
    """A request refused before its signature is checked; ``status`` is the answer's code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def content_length(value: str | None, limit: int = MAX_BODY_BYTES) -> int:
    """The body's size from its Content-Length header; BadRequest when it is not a size or over ``limit``."""
    if value is None:
        return 0
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # int() takes "-1" and "1_0"; isdigit() alone takes "²"
        raise BadRequest(400, "Content-Length is not a non-negative integer")
    if int(value) > limit:
        raise BadRequest(413, f"body over the limit of {limit} bytes")
    return int(value)


def body_key(body: bytes) -> str | None:
    """The idempotency key in a signed JSON body (finsent's ``json`` format), or None (a Slack body)."""
    try:
        data = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return None
    key = data.get("idempotency_key") if isinstance(data, dict) else None
    return key if isinstance(key, str) and key else None


@dataclass
class Received:
    """One request; ``body`` is whole when it was verified, else its first KEPT_REJECTED_BYTES."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    duplicate: bool
    error: str | None = None

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """``start()`` serves on 127.0.0.1:``port`` (0: any free port) in a background thread.

    ``status`` is the code it answers to valid requests (set 500 to simulate an outage of the
    application behind a live socket); a bad signature always gets 401, a body over MAX_BODY_BYTES
    413, a Content-Length that is not a size or an idempotency header that disagrees with the body 400.
    Processed keys are remembered for ``key_ttl`` seconds (retries of a lost answer come within
    minutes; ``finsent alerts retry`` may send one days later), at most ``max_keys`` of them.
    """

    secret: str
    port: int = 0
    status: int = 200
    tolerance: float = signing.DEFAULT_TOLERANCE_SECONDS
    key_ttl: float = 86_400.0
    max_keys: int = 100_000
    received: deque[Received] = field(default_factory=lambda: deque(maxlen=KEPT_RECORDS))
    on_receive: object = None  # optional callable(Received), e.g. to print
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _keys: OrderedDict[str, float] = field(default_factory=OrderedDict)  # key -> when processed, oldest first
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> list[Received]:
        """Verified, first-time deliveries: what the application behind the receiver acted on."""
        with self._lock:
            return [r for r in self.received if r.verified and not r.duplicate and r.error is None]

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # seconds a read may wait: a client that stops sending does not hold a thread

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                headers = dict(self.headers.items())
                try:
                    body = self.rfile.read(content_length(self.headers.get("Content-Length")))
                except BadRequest as exc:  # the body stays unread: the connection closes after the answer
                    self.close_connection = True
                    code, record = exc.status, receiver._refused(self.path, headers, b"", str(exc))
                else:
                    code, record = receiver._accept(self.path, headers, body)
                payload = json.dumps({"ok": code < 300, "duplicate": record.duplicate, "error": record.error}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Received]:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            signing.verify(self.secret, body, lower.get(signing.SIGNATURE_HEADER.lower()), tolerance=self.tolerance)
        except signing.SignatureError as exc:
            return 401, self._refused(path, headers, body, str(exc))
        header_key, signed_key = lower.get(signing.IDEMPOTENCY_HEADER.lower()), body_key(body)
        if signed_key and header_key and header_key != signed_key:  # a replay with another key, or a bug
            error = f"{signing.IDEMPOTENCY_HEADER} disagrees with the body's idempotency_key"
            return 400, self._record(Received(path, headers, body, verified=True, duplicate=False, error=error))
        key = signed_key or header_key  # the header alone only for a body without the key (Slack's format)
        with self._lock:
            duplicate = self._seen(key)
            # Only a successful answer means "processed": a 5xx leaves the key open for the retry.
            if key and not duplicate and self.status < 300:
                self._remember(key)
        record = Received(path, headers, body, verified=True, duplicate=duplicate,
                          error=None if self.status < 300 else f"answered {self.status}")
        return self.status, self._record(record)

    def _refused(self, path: str, headers: dict[str, str], body: bytes, error: str) -> Received:
        return self._record(Received(path, headers, body[:KEPT_REJECTED_BYTES], verified=False, duplicate=False,
                                     error=error))

    def _record(self, record: Received) -> Received:
        with self._lock:
            self.received.append(record)
        if callable(self.on_receive):
            self.on_receive(record)
        return record

    def _seen(self, key: str | None) -> bool:
        """Whether ``key`` was processed within ``key_ttl``; forgets the keys older than that."""
        cutoff = time.monotonic() - self.key_ttl
        while self._keys and next(iter(self._keys.values())) < cutoff:
            self._keys.popitem(last=False)
        return key is not None and key in self._keys

    def _remember(self, key: str) -> None:
        self._keys[key] = time.monotonic()
        while len(self._keys) > self.max_keys:  # the oldest go first
            self._keys.popitem(last=False)
