"""A deadline for one whole webhook attempt.

httpx's timeouts apply to each connect, write and read, so a receiver that trickles its answer (a
byte every few seconds) keeps an attempt going for good, and with it the dispatcher's pass, which
waits for every webhook's thread. :class:`AttemptDeadline` watches the sockets an attempt opens
(httpcore's ``trace`` extension reports them) and shuts them down when the time is up, which wakes
the blocked read with an error. A reused keep-alive connection opens no socket to watch, so the
dispatcher's client keeps none alive: alerts are rare, and a connection per attempt costs little.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

# httpcore's trace events whose return value is the stream a request then reads from.
_STREAM_EVENTS = ("connection.connect_tcp.complete", "connection.start_tls.complete")


class AttemptDeadline:
    """``with AttemptDeadline(seconds) as deadline:`` around one request sent with
    ``extensions={"trace": deadline.trace}``; ``deadline.expired`` says whether it cut the request."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> AttemptDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def trace(self, event_name: str, info: dict[str, Any]) -> None:
        if event_name not in _STREAM_EVENTS:
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._sockets.append(sock)
            if self.expired:  # connected just as the time ran out
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown would first drop its TLS
    # state, under a read that another thread may be in.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed
