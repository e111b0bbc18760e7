"""The /metrics server of ingest, alerts and the scheduler (finsent.metrics_server) holds a thread and a descriptor
per connection: connections that never finish their headers are closed after FINSENT_HTTP_HEADER_TIMEOUT, a trickle
included, those that never take their answer after FINSENT_HTTP_BODY_TIMEOUT, and a client over
FINSENT_HTTP_MAX_CONNECTIONS_PER_CLIENT is closed at once. Real servers on 127.0.0.1 with short deadlines; a test only
waits, generously, for a connection to be closed, or checks it still answers."""

from __future__ import annotations

import contextlib
import http.client
import logging
import select
import socket
import struct

from prometheus_client import CollectorRegistry, Counter, Gauge

from finsent.metrics_server import serve_metrics
from finsent.settings import load_settings
from tests.waiting import wait_for

GENEROUS = 15.0  # seconds a closing may take on a loaded machine


@contextlib.contextmanager
def served(series: int = 0, **settings):
    """A /metrics server on a free port; ``series`` more samples of about 500 bytes each make its answer large."""
    registry = CollectorRegistry()
    Counter("finsent_probe_total", "A counter to scrape", registry=registry).inc()
    if series:
        big = Gauge("finsent_probe_big", "A large family", ["key"], registry=registry)
        for i in range(series):
            big.labels(f"{i:07d}" + "x" * 480).set(i)
    server = serve_metrics(registry, 0, load_settings(**settings))
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def connect(port: int, sent: bytes = b"", source: str = "127.0.0.1", receive_buffer: int = 0) -> socket.socket:
    conn = socket.socket()
    if receive_buffer:  # before connecting, so that the window offered is small too
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    conn.settimeout(GENEROUS)
    conn.bind((source, 0))
    conn.connect(("127.0.0.1", port))
    conn.sendall(sent)
    return conn


def closed_by_server(conn: socket.socket) -> bool:
    """Whether the server closes ``conn`` within GENEROUS seconds (whatever it answers first)."""
    conn.settimeout(GENEROUS)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def counted(server, open_connections: dict[str, int]) -> None:
    """Wait until the server counts ``open_connections`` per client."""
    wait_for(lambda: server.clients.open == open_connections, GENEROUS, f"open connections {open_connections}",
             every=0.02)


def scrape(port: int, source: str = "127.0.0.1") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GENEROUS, source_address=(source, 0))
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_connections_that_never_finish_their_headers_are_closed_a_trickle_included(caplog, capfd) -> None:
    caplog.set_level(logging.INFO, "finsent.http_guard")
    with served(http_header_timeout=0.3, http_max_connections_per_client=0) as server:
        port = server.server_port
        silent, half = connect(port), connect(port, b"GET /metr")
        trickle = connect(port, b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        closed = False
        for _ in range(int(GENEROUS / 0.05)):  # a byte every 0.05 s: a socket timeout of 0.3 s would never expire
            try:
                trickle.sendall(b"a")
                if select.select([trickle], [], [], 0.05)[0] and not trickle.recv(65536):
                    closed = True
                    break
            except ConnectionError:
                closed = True
                break
        assert closed
        assert closed_by_server(half) and closed_by_server(silent)
        status, body = scrape(port)
        assert status == 200 and b"finsent_probe_total 1.0" in body
        counted(server, {})
    late = [r for r in caplog.records if "FINSENT_HTTP_HEADER_TIMEOUT" in r.getMessage()]
    assert len(late) == 1 and late[0].levelno == logging.INFO  # one line a minute per client, not one a connection
    assert late[0].getMessage().startswith("closed 1 connection(s) from 127.0.0.1")
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_over_its_connection_cap_is_closed_at_once_and_others_are_served(caplog) -> None:
    caplog.set_level(logging.INFO, "finsent.http_guard")
    with served(http_header_timeout=60, http_max_connections_per_client=2) as server:
        port = server.server_port
        held = [connect(port, b"GET /metr"), connect(port)]
        for _ in range(3):
            assert closed_by_server(connect(port))
        assert scrape(port, "127.0.0.2")[0] == 200  # another client
        held[0].sendall(b"ics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # an admitted one is served, then closed
        assert held[0].recv(65536).startswith(b"HTTP/1.0 200") and closed_by_server(held[0])
        counted(server, {"127.0.0.1": 1})
        assert scrape(port)[0] == 200
        held[1].close()
        counted(server, {})
    refusals = [r for r in caplog.records if "FINSENT_HTTP_MAX_CONNECTIONS_PER_CLIENT" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
    assert refusals[0].getMessage().startswith("refused 1 connection(s) from 127.0.0.1: it held 2 open")


def test_a_client_gone_mid_headers_is_released_without_a_traceback(capfd) -> None:
    # socketserver prints a traceback on stderr for a handler's exception: one per connection, anyone's to cause
    with served(http_header_timeout=60) as server:
        port = server.server_port
        for _ in range(3):
            conn = connect(port, b"GET /metr")
            counted(server, {"127.0.0.1": 1})
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            conn.close()
            counted(server, {})
        assert scrape(port)[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_the_count_is_released_however_a_connection_ends() -> None:
    # answered, late, malformed (wsgiref answers 400), closed by its client, refused: back to nothing after each
    with served(http_header_timeout=0.3, http_max_connections_per_client=1) as server:
        port = server.server_port
        for sent in (b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /metr", b"NOT HTTP\r\n\r\n"):
            conn = connect(port, sent)
            assert closed_by_server(conn)  # the server is through with it
            conn.close()
            counted(server, {})
        assert scrape(port)[0] == 200
    with served(http_header_timeout=60, http_max_connections_per_client=1) as server:
        port = server.server_port
        held = connect(port)
        counted(server, {"127.0.0.1": 1})
        assert closed_by_server(connect(port))  # refused: held is the one it may have
        assert server.clients.open == {"127.0.0.1": 1} and server.clients.refused == 1
        held.close()  # by its client
        counted(server, {})
        assert scrape(port)[0] == 200


def test_a_client_that_never_takes_its_answer_is_reset_and_its_thread_freed(caplog, capfd) -> None:
    # a whole request, then nothing read: the handler's thread and descriptor stayed blocked in a write for as long
    # as the client stayed, once the answer (here about 8 MB) was more than the socket buffers hold
    caplog.set_level(logging.INFO, "finsent.http_guard")
    with served(series=16_000, http_body_timeout=0.3, http_max_connections_per_client=0) as server:
        port = server.server_port
        stalled = [connect(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", receive_buffer=4096)
                   for _ in range(3)]
        for conn in stalled:  # the answer has begun (read without taking it): the server counts it until it ends
            assert conn.recv(1, socket.MSG_PEEK)
        counted(server, {})  # every handler is through
        for conn in stalled:
            taken = 0
            with contextlib.suppress(ConnectionError):
                while chunk := conn.recv(65536):
                    taken += len(chunk)
            assert 0 < taken < 1_000_000  # cut short: what the buffers held
            conn.close()
    late = [r for r in caplog.records if "did not take their answer" in r.getMessage()]
    assert len(late) == 1 and late[0].levelno == logging.INFO  # one line a minute per client, not one a connection
    assert late[0].getMessage().startswith("closed 1 connection(s) from 127.0.0.1")
    assert "FINSENT_HTTP_BODY_TIMEOUT" in late[0].getMessage()
    assert "Traceback" not in capfd.readouterr().err
