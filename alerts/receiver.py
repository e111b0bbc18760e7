"""A reference webhook receiver: verifies signatures, drops repeated idempotency keys, keeps what
arrived. ``finsent alerts receive`` runs it for local development; tests use it as the real
HTTP server that the engine delivers to. Standard library only, like ``alerts.signing``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alerts import signing


@dataclass
class Received:
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
    application behind a live socket); a bad signature always gets 401.
    """

    secret: str
    port: int = 0
    status: int = 200
    tolerance: float = signing.DEFAULT_TOLERANCE_SECONDS
    received: list[Received] = field(default_factory=list)
    on_receive: object = None  # optional callable(Received), e.g. to print
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _keys: set[str] = field(default_factory=set)
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
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                code, record = receiver._accept(self.path, dict(self.headers.items()), body)
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
        key = lower.get(signing.IDEMPOTENCY_HEADER.lower())
        try:
            signing.verify(self.secret, body, lower.get(signing.SIGNATURE_HEADER.lower()), tolerance=self.tolerance)
        except signing.SignatureError as exc:
            record = Received(path, headers, body, verified=False, duplicate=False, error=str(exc))
            code = 401
        else:
            with self._lock:
                duplicate = key in self._keys if key else False
                # Only a successful answer means "processed": a 5xx leaves the key open for the retry.
                if key and self.status < 300:
                    self._keys.add(key)
            record = Received(path, headers, body, verified=True, duplicate=duplicate,
                              error=None if self.status < 300 else f"answered {self.status}")
            code = self.status
        with self._lock:
            self.received.append(record)
        if callable(self.on_receive):
            self.on_receive(record)
        return code, record
