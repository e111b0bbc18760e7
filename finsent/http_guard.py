"""How finsent's aiohttp servers (ingest push, labels API, dashboard, and the stream worker's through
:mod:`stream.guarded_web`) hold connections: a deadline for each request's headers, one for taking each answer, and
a cap on each client's open connections.

aiohttp waits for a request's line and headers as long as its keep-alive timer allows (75 s under ``run_app``,
an hour under a bare ``AppRunner``), and each waiting connection holds a file descriptor: 300 connections that
sent half a request line starved a server limited to 256 open files (RELIABILITY.md). Here

- a connection whose request line and headers are not complete ``http_header_timeout`` seconds after it opened
  (its first request) or after the first byte of a later request arrived is closed;
- a connection whose client has not taken what was written to it ``http_body_timeout`` seconds after the first
  write the kernel could not take whole is reset, its unsent answer dropped (see below);
- a client (:func:`finsent.rate_limit.client_key`: an IPv4 address or an IPv6 /64) holding
  ``http_max_connections_per_client`` open connections has its next one closed at once.

aiohttp writes an answer without a deadline (its keep-alive timer runs only between requests): a client that sent a
request and read nothing held the connection, the handler's coroutine and the unsent answer (asyncio's write buffer,
once the kernel's is full) for as long as it stayed connected, and a closing connection still waits for its buffer
to empty. Here each connection's transport pauses its writer as soon as anything is left unsent (a high-water mark
of 0, asyncio's public ``set_write_buffer_limits``: pause and resume then mean "bytes unsent" and "all handed to the
kernel"), and a pause that lasts ``http_body_timeout`` seconds resets the connection (``SO_LINGER`` 0, so that the
kernel drops its copy too). Each of finsent's answers is written whole (``web.Response``: one write, one pause), so
the client must take all but what the kernel buffers within the deadline; a streamed answer would get the deadline
for each stall, and a ``FileResponse`` sent with ``sendfile`` (the dashboard's pages, under 8 KB) never pauses.

Two errors that aiohttp logs at ERROR with a traceback, one line per connection, are a client's doing: a malformed
request (the traceback quoted the bad header line, a token included) gets 400 and the same rate-limited line as the
refusals, with nothing of its bytes; a client gone mid-request, aiohttp's DEBUG line for a client gone. Refusals,
late headers, answers not taken and malformed requests are counted in the server's registry (:class:`GuardMetrics`).
A stop waits ``SHUTDOWN_TIMEOUT`` for the requests under way, not aiohttp's 60 s.

No deadline nor the cap is an aiohttp setting, and aiohttp has no hook for them (its ``keepalive_timeout`` also
bounds an idle connection between requests, and counts from the previous answer, not from the request's first
byte), so :class:`_Connection` is a narrow subclass of aiohttp's protocol, ``RequestHandler`` (pinned in
constraints.txt; ``tests/unit/test_http_guard.py`` runs it against real sockets). The cap, the deadlines, the count
and the log lines are plain logic (:class:`ClientConnections`), shared with :mod:`finsent.metrics_server`, as is the
reset (:func:`reset_on_close`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, Counter

from finsent.rate_limit import client_key
from finsent.settings import Settings
from finsent.stop_signals import StoppedWhileStarting, install_stop_handlers

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT = 75.0  # seconds an idle keep-alive connection is kept: run_app's and nginx's default
# Seconds a stop waits for the requests under way, then again for those it cancelled (aiohttp's default, 60 s, let
# a sender trickling its body hold a SIGTERM for the body deadline, past docker-compose's 40 s grace period). A push
# batch cut off here still goes to Kafka (a thread runs it); its sender, unanswered, sends it again.
SHUTDOWN_TIMEOUT = 5.0
REPORT_EVERY = 60.0  # seconds between two log lines about one client
_MAX_REPORTED = 10_000  # clients whose last log line is remembered; beyond, the least recent is forgotten


class GuardMetrics:
    """The guard's counters in a server's own registry (the one its /metrics serves), labelled with its name."""

    def __init__(self, registry: CollectorRegistry, server: str = "push") -> None:
        def counter(name: str, help_text: str) -> Any:
            return Counter(name, help_text, ["server"], registry=registry).labels(server)

        self.refused = counter("finsent_http_connections_refused_total", "Connections closed at once: their client "
                               "held FINSENT_HTTP_MAX_CONNECTIONS_PER_CLIENT open")
        self.late_headers = counter("finsent_http_late_headers_total", "Connections closed: a request's line and "
                                    "headers were not complete within FINSENT_HTTP_HEADER_TIMEOUT")
        self.malformed = counter("finsent_http_malformed_requests_total", "Malformed requests, answered 400")
        self.late_answers = counter("finsent_http_late_answers_total", "Connections reset: their client did not take "
                                    "an answer within FINSENT_HTTP_BODY_TIMEOUT")


class ClientConnections:
    """A server's connection limits: the cap on each client's open connections (``max_per_client``, 0: none) and the
    deadlines for a request's headers (``header_timeout``) and for taking an answer (``answer_timeout``), in seconds;
    the open connections per client; and what the guard turned away: refusals over the cap, late headers, answers
    not taken and malformed requests (answered 400), each counted in ``metrics`` and logged at most once per
    ``report_every`` seconds per client and kind with the count since the previous line. Pure apart from logging."""

    def __init__(self, max_per_client: int, header_timeout: float, answer_timeout: float, *,
                 metrics: GuardMetrics | None = None, report_every: float = REPORT_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_per_client, self.metrics = max_per_client, metrics
        self.header_timeout, self.answer_timeout = header_timeout, answer_timeout
        self.report_every, self.clock = report_every, clock
        self.open: dict[str, int] = {}
        self.refused = 0  # since the start, every client
        self._unreported: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()  # (last line, since)

    def admit(self, client: str) -> bool:
        """Count a new connection of ``client``; False (and counted as refused) when it already holds the most."""
        held = self.open.get(client, 0)
        if 0 < self.max_per_client <= held:
            self.refused += 1
            if self.metrics is not None:
                self.metrics.refused.inc()
            self._report("refused", client, logging.WARNING,
                         "refused %d connection(s) from %s: it held %d open, the most FINSENT_HTTP_MAX_CONNECTIONS_"
                         "PER_CLIENT allows (one line a minute per client)", held)
            return False
        self.open[client] = held + 1
        return True

    def release(self, client: str) -> None:
        held = self.open.pop(client, 0) - 1
        if held > 0:
            self.open[client] = held

    def headers_late(self, client: str) -> None:
        if self.metrics is not None:
            self.metrics.late_headers.inc()
        self._report("late", client, logging.INFO,
                     "closed %d connection(s) from %s that did not send a request's headers within %g s "
                     "(FINSENT_HTTP_HEADER_TIMEOUT; one line a minute per client)", self.header_timeout)

    def answer_late(self, client: str) -> None:
        """A connection reset because its client did not take the answer within ``answer_timeout`` seconds."""
        if self.metrics is not None:
            self.metrics.late_answers.inc()
        self._report("answer", client, logging.INFO,
                     "closed %d connection(s) from %s that did not take their answer within %g s "
                     "(FINSENT_HTTP_BODY_TIMEOUT; one line a minute per client)", self.answer_timeout)

    def malformed(self, client: str) -> None:
        if self.metrics is not None:
            self.metrics.malformed.inc()
        self._report("malformed", client, logging.INFO,
                     "answered %d malformed request(s) from %s with %d (one line a minute per client)", 400)

    def _report(self, kind: str, client: str, level: int, message: str, detail: object) -> None:
        key, now = (kind, client), self.clock()
        last, count = self._unreported.pop(key, (None, 0))
        count += 1
        if last is None or now - last >= self.report_every:
            log.log(level, message, count, client, detail)
            last, count = now, 0
        self._unreported[key] = (last, count)  # most recent last
        while len(self._unreported) > _MAX_REPORTED:
            self._unreported.popitem(last=False)


def reset_on_close(sock: socket.socket) -> None:
    """Make ``sock``'s close a reset (``SO_LINGER`` on, 0 s): the kernel drops what is unsent instead of going on
    offering it to a client that takes none."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Connection(RequestHandler):
    """aiohttp's protocol for one connection, plus the cap and the header and answer deadlines. It reads two private
    attributes of aiohttp 3.14's RequestHandler: ``_request_count`` (requests whose headers were parsed) and
    ``_waiter`` (pending while the connection waits for its next request), the same test aiohttp's own keep-alive
    timer makes. The answer deadline reads nothing private: it overrides asyncio's flow-control callbacks,
    ``pause_writing`` and ``resume_writing``, on which aiohttp 3.14's ``BaseProtocol`` makes its writer's drain wait
    (``connection_lost`` ends that wait), and keeps the transport itself, which aiohttp's ``force_close`` drops
    before the close is through. ``test_a_client_that_never_takes_a_large_answer_is_reset_logged_once_and_counted``
    and ``test_the_unsent_rest_of_a_finished_answer_does_not_hold_the_connection_it_closes`` fail if that changes."""

    __slots__ = ("_clients", "_client", "_header_timer", "_writes_to", "_answer_timer")

    def __init__(self, manager: web.Server, clients: ClientConnections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._clients = clients
        self._client: str | None = None  # set once admitted
        self._header_timer: asyncio.TimerHandle | None = None
        # aiohttp forgets its transport when it closes it, and a close waits for the unsent bytes: kept until lost
        self._writes_to: asyncio.Transport | None = None
        self._answer_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        client = client_key(peer[0] if isinstance(peer, tuple) else None)
        if not self._clients.admit(client):
            self.force_close()
            return
        self._client = client
        self._writes_to = transport = self.transport
        transport.set_write_buffer_limits(high=0)  # pause_writing as soon as a byte is left unsent
        self._start_header_clock()

    def data_received(self, data: bytes) -> None:
        # The first byte of a later request starts its clock; a byte that arrives while a request is being read or
        # answered (its body, a pipelined request) does not: half a request pipelined behind one being answered
        # waits under aiohttp's keep-alive timer (75 s) instead, as an idle connection does. aiohttp's C parser keeps
        # such a half in C state, so nothing here can tell it from an idle connection (RELIABILITY.md).
        if data and self._header_timer is None and self._waiter is not None and not self._waiter.done():
            self._start_header_clock()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._client is not None:
            self._answer_timer = self._loop.call_later(self._clients.answer_timeout, self._answer_late)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._answer_timer is not None:  # all of it handed to the kernel
            self._answer_timer.cancel()
            self._answer_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._header_timer, self._answer_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._answer_timer = self._writes_to = None
        if self._client is not None:
            self._clients.release(self._client)
            self._client = None
        super().connection_lost(exc)

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp logs every error at ERROR with a traceback. Two are a client's doing, not a bug, and a line per
        # connection is a flood anyone can cause: a malformed request (whose traceback quotes the bad line, a token
        # included) and a client gone mid-request (its body cut short).
        if isinstance(exc, HttpProcessingError):
            if self._client is not None:
                self._clients.malformed(self._client)
            answer = web.Response(status=400, text=f"400 Bad Request: {exc.message}", content_type="text/plain")
            answer.force_close()
            return answer
        if isinstance(exc, ConnectionError) and self.transport is None:
            raise ConnectionError("the client closed the connection") from exc  # aiohttp's own path: a DEBUG line
        return super().handle_error(request, status, exc, message)

    def _start_header_clock(self) -> None:
        self._header_timer = self._loop.call_later(self._clients.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._client is not None:
            self._clients.headers_late(self._client)
        self.force_close()

    def _answer_late(self) -> None:
        self._answer_timer = None
        transport, self._writes_to = self._writes_to, None
        if transport is None or not transport.get_write_buffer_size():  # dropped by an abort already under way
            return
        # Reset, not closed: a close waits for asyncio's buffer to empty, and the kernel would go on offering its own.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            reset_on_close(sock)
        transport.abort()  # connection_lost follows: the handler's drain returns, and the client's count is released
        if self._client is not None:
            self._clients.answer_late(self._client)


class _Server(web.Server):
    """aiohttp's Server making :class:`_Connection` protocols: ``Server.__call__`` builds ``RequestHandler`` by
    name, with the keyword arguments the runner gathered (``_kwargs``), and offers no setting for the class."""

    def __init__(self, made: web.Server, clients: ClientConnections) -> None:
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation, **made._kwargs)
        self.clients = clients

    def __call__(self) -> RequestHandler:
        return _Connection(self, self.clients, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections have the header and answer deadlines and the per-client cap of
    ``settings``, counted in ``metrics``."""

    def __init__(self, app: web.Application, settings: Settings, *, metrics: GuardMetrics | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        kwargs.setdefault("shutdown_timeout", SHUTDOWN_TIMEOUT)
        super().__init__(app, **kwargs)
        self.clients = ClientConnections(settings.http_max_connections_per_client, settings.http_header_timeout,
                                         settings.http_body_timeout, metrics=metrics)

    async def _make_server(self) -> web.Server:
        # AppRunner's private hook (aiohttp 3.14), the one place that builds the Server: there is no public setting.
        return _Server(await super()._make_server(), self.clients)


async def serve(app: web.Application, host: str, port: int, settings: Settings, stop: asyncio.Event, *,
                started: Callable[[str], None] | None = None, **runner_args: Any) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set; ``started`` is given the site's URL once it listens.
    ``runner_args`` go to :class:`GuardedRunner` (``metrics``) and aiohttp's runner (``access_log``)."""
    runner = GuardedRunner(app, settings, **runner_args)
    try:
        await _set_up_unless_stopped(runner, stop)
        site = web.TCPSite(runner, host, port)
        await site.start()
        if started is not None:
            started(site.name)
        await stop.wait()
    finally:
        await runner.cleanup()


async def _set_up_unless_stopped(runner: GuardedRunner, stop: asyncio.Event) -> None:
    """The app's start-up (its clients connect: the labels API's Kafka producer), cut short by a stop: it waited,
    a SIGTERM only recorded, until Kafka answered or the start-up failed 30 s later."""
    setup = asyncio.ensure_future(runner.setup())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({setup, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not setup.done():
        setup.cancel()
        await asyncio.gather(setup, return_exceptions=True)
        raise StoppedWhileStarting("stopped while starting")
    setup.result()


def run(app: web.Application, host: str, port: int, settings: Settings, *,
        started: Callable[[str], None] | None = None, **runner_args: Any) -> None:
    """:func:`serve` until SIGINT or SIGTERM, in a new event loop (what ``web.run_app`` does with its own runner)."""
    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await serve(app, host, port, settings, stop, started=started, **runner_args)

    asyncio.run(main())
