"""What ``FINSENT_KAFKA_BOOTSTRAP`` may hold: comma-separated ``host:port`` entries, nothing else.

The clients disagreed on anything else: kafka-python (the CLI's) drops a leading ``PLAINTEXT://`` or ``http://``, but
aiokafka (the stream worker's) takes ``http://kafka`` as the host name, so ``http://kafka:9092`` passed and failed
later with a resolver error that named neither the setting nor the scheme; both read ``::1:9092`` as the address
``::1:9092`` on the default port. Each entry is checked here instead, and the first wrong one is named. An entry that
carries credentials is never quoted whole: the error, ``finsent status`` and the stop lines would print them.
"""

from __future__ import annotations

import ipaddress
import re

# A DNS name or an IPv4 address: labels of letters, digits, - and _, dot-separated, an optional final dot (settings
# checks FINSENT_ALLOWED_HOSTS with it too, as a Host header carries a name).
HOST_NAME = re.compile(r"(?=.{1,254}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")
_FORM = "write host:port (kafka:9092, [::1]:9092)"


def entry_problem(entry: str) -> str | None:
    """Why one bootstrap entry (stripped) is not ``host:port``, quoting it; None when it is."""
    if not entry:
        return f"an empty entry (a stray comma?): {_FORM}"
    if "@" in entry:  # user:password@host:port passed as host:port
        return (f"{'***@' + entry.rpartition('@')[2]!r} carries credentials: set FINSENT_KAFKA_SASL_USERNAME and "
                "FINSENT_KAFKA_SASL_PASSWORD (with FINSENT_KAFKA_SASL_MECHANISM and "
                "FINSENT_KAFKA_SECURITY_PROTOCOL=SASL_SSL) instead")
    if "://" in entry:  # a URL's scheme, or a listener's name (PLAINTEXT://, SASL_SSL://)
        return (f"{entry!r} has a scheme ({entry.partition('://')[0]}://): {_FORM}; the protocol is "
                "FINSENT_KAFKA_SECURITY_PROTOCOL")
    if "/" in entry or "?" in entry or "#" in entry:
        return f"{entry!r} has a path: {_FORM}"
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{entry!r} is not host:port with a port from 1 to 65535: {_FORM}"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{entry!r}: {host} is not an IPv6 address"
        return None
    if ":" in host:  # the clients read ::1:9092 as that address, on port 9092
        return f"{entry!r}: an IPv6 address goes in brackets ([::1]:9092)"
    if not HOST_NAME.fullmatch(host):
        return f"{entry!r}: {host!r} is not a host name or address: {_FORM}"
    return None


def bootstrap_problem(value: str) -> str | None:
    """The problem of the first wrong entry of a comma-separated bootstrap list; None when every one is right."""
    for entry in value.split(","):
        if problem := entry_problem(entry.strip()):
            return problem
    return None
