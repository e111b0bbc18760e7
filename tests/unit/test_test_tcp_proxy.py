"""The integration tests' switchable TCP proxy (tests/integration/stream_harness.py): Elasticsearch "going away"."""

from __future__ import annotations

import socket
import threading

from tests.integration.stream_harness import TcpProxy


def _echo_server() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda: [conn.sendall(d) for d in iter(lambda: conn.recv(1024), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_a_connection_accepted_while_the_proxy_stops_is_cut_too(monkeypatch):
    # The proxy dials the target after accept(), before it records the connection; a stop() in between left that
    # connection relayed through the "outage", so a worker could index through it while the test counted nothing.
    target = _echo_server()
    dialling, stopped = threading.Event(), threading.Event()
    dial = socket.create_connection

    def slow_dial(*args, **kwargs):
        dialling.set()
        stopped.wait(10)
        return dial(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", slow_dial)
    proxy = TcpProxy(*target.getsockname())
    proxy.start()
    try:
        with dial(("127.0.0.1", proxy.port), timeout=10) as client:
            assert dialling.wait(10)
            proxy.stop()
            stopped.set()
            try:
                client.sendall(b"ping")
                answer = client.recv(16)
            except OSError:
                answer = b""
        assert answer == b"", "the connection was relayed after stop()"
    finally:
        stopped.set()
        proxy.stop()
        target.close()


def test_the_proxy_relays_and_relays_again_after_a_restart():
    target = _echo_server()
    proxy = TcpProxy(*target.getsockname())
    try:
        for _ in range(2):
            proxy.start()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
                client.sendall(b"ping")
                assert client.recv(16) == b"ping"
            proxy.stop()
    finally:
        proxy.stop()
        target.close()
