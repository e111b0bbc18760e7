"""A deadline for one whole webhook attempt.

httpx's timeouts apply to each connect, write and read, so a receiver that trickles its answer (a
byte every few seconds) keeps an attempt going for good, and with it the dispatcher's pass, which
waits for every webhook's thread. :class:`AttemptDeadline` keeps a duplicate of each TCP socket the
attempt connects (httpcore's ``trace`` extension reports them) and shuts it down when the time is
up: the shutdown acts on the connection, so it wakes the blocked read whatever wraps the socket
later (TLS, a tunnel through a proxy). A reused keep-alive connection opens no socket to watch, so
the dispatcher's client keeps none alive: alerts are rare, and a connection per attempt costs little.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

# httpcore's trace events whose return value is a new TCP stream: "connection.connect_tcp.complete",
# and the same for the connection to a proxy.
_TCP_CONNECTED = "connect_tcp.complete"


class AttemptDeadline:
    """``with AttemptDeadline(seconds) as deadline:`` around one request sent with
    ``extensions={"trace": deadline.trace}``; ``deadline.expired`` says whether it cut the request."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []  # duplicates, ours to close
        self._lock = threading.Lock()
        self._closed = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> AttemptDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            for sock in self._sockets:
                sock.close()

    def trace(self, event_name: str, info: dict[str, Any]) -> None:
        if not event_name.endswith(_TCP_CONNECTED):
            return
        # A duplicate: TLS detaches the socket httpcore connected, and the duplicate's descriptor
        # stays ours, so no other file can take its number before the shutdown.
        try:
            sock = info["return_value"].get_extra_info("socket").dup()
        except OSError:  # no descriptor left: this attempt keeps httpx's per-read timeout only
            return
        with self._lock:
            if self._closed:
                sock.close()
                return
            self._sockets.append(sock)
            if self.expired:  # connected just as the time ran out
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the connection has ended already
