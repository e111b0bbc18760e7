"""Loopback ports nothing listens on, for servers a test starts (or for none at all).

The port is drawn below the kernel's ephemeral range: a port the kernel hands out (``bind(0)``) is also what
it gives the outgoing connections of Kafka and Elasticsearch clients, so one taken between this pick and the
server's own bind made a worker fail with "address already in use" (seen in a full run). Below the range, only
another test's pick can take it, and the draw is random over thousands of ports. The draw is the system's, not the
``random`` module's: training seeds that (transformers' ``set_seed``), so two pytest-xdist processes that had each
trained the tiny model drew the same ports, and one worker answered the other's health checks.
"""

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20_000
_DRAW = random.SystemRandom()  # unaffected by random.seed


def _below_ephemeral() -> range:
    try:
        first = int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA dynamic range starts at 49152
        first = 49_152
    return range(_LOWEST, max(first, _LOWEST + 1_000))


def free_port() -> int:
    ports = _below_ephemeral()
    for _ in range(200):
        port = _DRAW.choice(ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: draw again
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` different ports drawn as :func:`free_port` draws one, for a test that starts several servers: two
    draws may give the same port, and the second server would then find it taken by the first."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports
