"""The /metrics server of ingest, the alert engine and the scheduler: prometheus_client's own WSGI app (the text
its ``start_http_server`` serves) behind the Host check of :mod:`finsent.allowed_hosts`, which that function has no
hook for; served, as there, by a threading WSGI server in a daemon thread.

Each connection holds a thread and a file descriptor, so the server keeps the limits of the aiohttp servers
(:mod:`finsent.http_guard`, its settings and its :class:`~finsent.http_guard.ClientConnections`): a connection whose
request line and headers are not complete ``FINSENT_HTTP_HEADER_TIMEOUT`` seconds after it was accepted is closed
(wsgiref answers one request a connection, so there is no later request to time), and a client holding
``FINSENT_HTTP_MAX_CONNECTIONS_PER_CLIENT`` has its next connection closed at once. A socket timeout alone restarts
on every read, so a client sending a byte at a time would never meet it: before each read of the headers the
socket's timeout is set to the time left.

The answer, likewise, must be taken within ``FINSENT_HTTP_BODY_TIMEOUT`` seconds of its first byte: a client that
sent a whole request and never read held its thread and descriptor, blocked in a write, for as long as it stayed
connected, once the answer was larger than the socket buffers (megabytes on loopback). Such a connection is reset,
its unsent answer discarded, and logged as the late headers are (the guard's INFO line, once a minute per client),
not with wsgiref's traceback on stderr, one per connection.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from finsent import allowed_hosts
from finsent.http_guard import ClientConnections, reset_on_close
from finsent.rate_limit import client_key
from finsent.settings import Settings


class _Deadline(io.RawIOBase):
    """A connection's reads, each allowed no more than the time left before ``deadline`` (monotonic seconds; None:
    no limit, the socket blocking as before)."""

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        super().__init__()
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]  # any writable buffer, as io's
        if self.deadline is not None:  # None once the headers are in: the socket blocks again (parse_request)
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request's line and headers came too late")
            self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _AnswerTooSlow(ConnectionAbortedError):
    """The client did not take the answer in time. A ConnectionAbortedError, which wsgiref takes for a client gone:
    no traceback, no error page on a connection that takes nothing."""


class _Writes(io.BufferedIOBase):
    """A connection's writes, all of them within ``timeout`` seconds of the first (a socket timeout bounds one
    ``sendall``, and an answer is several: before each the socket's timeout is set to the time left)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        super().__init__()
        self.sock, self.timeout = sock, timeout
        self.deadline: float | None = None  # set by the first write
        self.late = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]  # any bytes-like object, as io's
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            self.sock.sendall(data)
        except TimeoutError as exc:
            self.late = True
            raise _AnswerTooSlow("the client did not take the answer in time") from exc
        with memoryview(data) as view:
            return view.nbytes


class _Handler(WSGIRequestHandler):
    """wsgiref's handler (one request a connection) reading the request line and headers under their deadline and
    writing the answer under its own."""

    server: _MetricsServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's own reader, replaced: an open one would keep the socket from closing
        self._reader = _Deadline(self.connection, time.monotonic() + self.server.clients.header_timeout)
        self.rfile = io.BufferedReader(self._reader)
        # socketserver's writer has no limit
        self.wfile = self._writer = _Writes(self.connection, self.server.clients.answer_timeout)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._reader.deadline = None  # the headers are in: the answer has its own deadline (_Writes)
        self.connection.settimeout(None)
        return parsed

    def handle(self) -> None:
        # Left to socketserver, either error would print a traceback on stderr for every such connection.
        try:
            super().handle()
        except TimeoutError:
            if self._reader.deadline is None:
                raise
            self.server.headers_late(self.client_address)
        except _AnswerTooSlow:
            pass  # an error page (400, 414) not taken; wsgiref's run() handles an answer's own
        except ConnectionError:
            if self._reader.deadline is None:
                raise
            # the client left mid-headers: nothing to answer, nothing to report
        if self._writer.late:
            reset_on_close(self.connection)
            self.server.answer_late(self.client_address)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """A line on stderr for every scrape is noise (prometheus_client's handler is silent too)."""


class _MetricsServer(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server counting each client's connections: admitted in ``verify_request``
    (the accepting thread), released in ``shutdown_request``, which socketserver calls once for every connection
    however it ends (refused, answered, failed, or its thread not started)."""

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, clients: ClientConnections) -> None:
        self.address_family = family  # IPv6 binds too
        self.clients = clients
        self._lock = threading.Lock()  # ClientConnections is plain logic: the accepting and handler threads share it
        self._admitted: dict[socket.socket, str] = {}
        super().__init__(address, _Handler)

    def verify_request(self, request, client_address) -> bool:  # type: ignore[override]
        client = client_key(client_address[0])
        with self._lock:
            if not self.clients.admit(client):
                return False
            self._admitted[request] = client
        return True

    def shutdown_request(self, request) -> None:  # type: ignore[override]
        try:
            super().shutdown_request(request)
        finally:
            with self._lock:
                client = self._admitted.pop(request, None)
                if client is not None:
                    self.clients.release(client)

    def headers_late(self, client_address) -> None:
        with self._lock:
            self.clients.headers_late(client_key(client_address[0]))

    def answer_late(self, client_address) -> None:
        with self._lock:
            self.clients.answer_late(client_key(client_address[0]))


def serve_metrics(registry: CollectorRegistry, port: int, settings: Settings) -> WSGIServer:
    """Serve ``registry`` on ``FINSENT_METRICS_HOST:port`` (0: a free port) until the process exits; OSError when
    the address cannot be bound. The server is returned for its port and for tests to shut it down."""
    host = settings.metrics_host
    family, *_, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    clients = ClientConnections(settings.http_max_connections_per_client, settings.http_header_timeout,
                                settings.http_body_timeout)
    server = _MetricsServer((sockaddr[0], port), family, clients)
    server.set_app(allowed_hosts.wsgi(make_wsgi_app(registry), allowed_hosts.AllowedHosts.of(settings, host)))
    threading.Thread(target=server.serve_forever, name=f"metrics-{server.server_port}", daemon=True).start()
    return server
