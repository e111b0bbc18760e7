"""Bytes from one socket to another until either side ends: the half of a TCP relay that the test proxies
(tests/integration/stream_harness.py, a CONNECT tunnel in tests/unit/test_alerts_delivery.py) run in each direction."""

from __future__ import annotations

import socket


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy until ``src`` ends or either side fails, then shut both down, so the other direction ends too."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
