"""Which addresses a fetch may connect to, checked on the connection itself.

A feed's server chooses where its redirects point, so a public feed could make ingest GET the local network or a
cloud metadata address (169.254.169.254). A fetch that may reach public addresses only goes through
:class:`GuardedBackend`: it resolves the name, refuses addresses that are not public, and connects to the address it
checked (TLS's server name and certificate check and ``Host`` still use the name). Checking a redirect's URL before
following it would not do: the name could resolve to another address when the connection is made (DNS rebinding).
The same backend with ``internal=True`` connects to internal addresses only: an intranet source's fetch, judged
internal by one lookup, cannot then reach a public server (whose redirects would be followed inside) through another.

:func:`forbidden` and :func:`all_internal` are the policy, pure; the rest is I/O.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[Address]]]


# NAT64's well-known prefix (RFC 6052): DNS64 gives an IPv4-only host 64:ff9b::<its IPv4 address>, and the gateway
# connects to that address, private ones included (a cloud's NAT gateway reaches its network's private addresses).
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to ``address`` reaches: IPv4-mapped (a dual-stack socket), NAT64's well-known
    prefix, 6to4 (2002::/16, through a relay); None for any other."""
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def forbidden(address: Address) -> str | None:
    """Why ``address`` is not a public one ("loopback", "link-local", "private"…), or None when it is.

    Python's tables decide: documentation ranges (192.0.2.0/24, 203.0.113.0/24, 2001:db8::/32) count as private,
    and 100.64.0.0/10 (carrier-grade NAT, where one cloud keeps its metadata service) as non-public. An IPv6
    address that carries an IPv4 one (:func:`embedded_ipv4`) is judged by it: 64:ff9b::7f00:1 is loopback, and
    64:ff9b::808:808 (8.8.8.8 through NAT64) public, not "reserved" as Python's tables have all of ::/8."""
    if isinstance(address, ipaddress.IPv6Address):
        if (ipv4 := embedded_ipv4(address)) is not None:
            address = ipv4
        elif address.is_site_local:  # fec0::/10: deprecated, yet routed where still configured
            return "site-local"
    for reason, flag in (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
                         ("link-local", address.is_link_local), ("multicast", address.is_multicast),
                         ("reserved", address.is_reserved), ("private", address.is_private)):
        if flag:
            return reason
    return None if address.is_global else "non-public"


def all_internal(addresses: Iterable[Address]) -> bool:
    """Whether a host with these addresses is itself internal (an intranet feed): every one of them, and at least
    one. A host that also has a public address is treated as public, and only its public addresses are used."""
    found = list(addresses)
    return bool(found) and all(forbidden(address) for address in found)


class ForbiddenAddress(Exception):
    """A connection refused by the guard: to a non-public address on behalf of a public source, or (``reason``
    "public") to a public one on behalf of an internal source; the message names the host."""

    def __init__(self, host: str, address: Address, reason: str) -> None:
        where = host if _is_address(host) else f"{host} ({address})"
        article = "an" if reason[0] in "aeiou" else "a"
        told = f"not connecting to {where}, {article} {reason} address"
        if reason == "public":
            told += ": the fetch was judged internal (its host had internal addresses only), so it stays inside"
        super().__init__(told)
        self.host = host
        self.address = address
        self.reason = reason


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(host: str, port: int) -> list[Address]:
    """The addresses of ``host`` (itself when it is one), in the resolver's order, without repeats."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # a label over 63 characters, or empty ("a..b"): httpx's parser lets them through
        raise OSError(f"not a name DNS can look up ({exc})") from None
    found: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to public addresses, or with ``internal`` only to internal ones.

    ``resolver`` and ``connector`` (the backend that makes the connection to a checked address; httpcore's own by
    default) are there for tests, which have no public network."""

    def __init__(self, resolver: Resolver = resolve, connector: httpcore.AsyncNetworkBackend | None = None, *,
                 internal: bool = False) -> None:
        self._resolve = resolver
        self._connect = connector or httpcore.AnyIOBackend()
        self.internal = internal

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout}s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        allowed = [address for address in addresses if (forbidden(address) is not None) is self.internal]
        if not allowed:
            raise ForbiddenAddress(host, addresses[0], forbidden(addresses[0]) or "public")
        failure: httpcore.ConnectError | None = None
        for address in allowed:  # in the resolver's order; the last failure is the one told
            try:
                return await self._connect.connect_tcp(str(address), port, timeout=timeout,
                                                       local_address=local_address, socket_options=socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a guarded fetch does not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._connect.sleep(seconds)


def guarded_transport(backend: GuardedBackend, ssl_context: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """httpx's transport, its connections made through ``backend``, and no proxy (a proxy would connect wherever a
    redirect points). httpx 0.28 passes no network backend to its pool, so the pool is built here as httpx builds
    it; the tests of the guarded fetch fail if a new httpx stops using it. ``ssl_context`` is the fetcher's one
    (building one loads the CA bundle: about 30 ms)."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context)
    limits = httpx.Limits()  # httpx's defaults
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context, max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend)
    return transport
