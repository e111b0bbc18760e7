"""A loopback port nothing listens on, for servers a test starts (or for none at all)."""

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
