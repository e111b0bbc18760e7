"""Per-client rate limits for the HTTP endpoints (push, labels): a token bucket per client.

Each client owns a bucket of ``burst`` tokens refilled at ``rate`` per second; a request
takes one token, and without one it gets ``429 Too Many Requests`` with ``Retry-After`` (whole
seconds until a token is back). The limiter is pure apart from the injected clock; the aiohttp
middleware is the thin I/O edge. The client is ``request.remote`` (the socket's peer):
``X-Forwarded-For`` is never trusted, as anyone can send it. An IPv6 client is its /64 network
(:func:`client_key`).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

_MAX_CLIENTS = 10_000  # buckets kept; beyond, the least recently used is forgotten


def client_key(remote: str | None) -> str:
    """The bucket of a peer address: an IPv4 address, or the /64 network of an IPv6 one. A host or
    site is usually given a whole /64, so a bucket per IPv6 address would let one client take a new
    address for each request."""
    if not remote:
        return "unknown"
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])  # a link-local address may carry a zone
    except ValueError:
        return remote  # not an IP address (a Unix socket): its own bucket
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBucketLimiter:
    """``rate`` tokens per second up to ``burst`` per key; ``rate <= 0`` means no limit."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                # Forgetting the least recently used client gives it a full bucket, which it almost surely
                # has anyway; forgetting every client at once would lift the limit of those in a flood.
                while len(self._buckets) >= _MAX_CLIENTS:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            else:
                self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def retry_after(wait: float) -> str:
    """The Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


def middleware(limiter: TokenBucketLimiter, *, exempt: Iterable[str] = (),
               on_limited: Callable[[Any], None] | None = None) -> Any:
    """An aiohttp middleware answering 429 (JSON, with Retry-After) to clients over the limit.

    ``exempt``: paths never limited (health checks, Prometheus scrapes).
    """
    import orjson
    from aiohttp import web

    skip = frozenset(exempt)

    @web.middleware
    async def rate_limit(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if not limiter.enabled or request.path in skip:
            return await handler(request)
        client = client_key(request.remote)
        wait = limiter.take(client)
        if wait <= 0:
            return await handler(request)
        if on_limited is not None:
            on_limited(request)
        seconds = retry_after(wait)
        return web.Response(status=429, content_type="application/json", headers={"Retry-After": seconds},
                            body=orjson.dumps({"error": f"too many requests from {client}; "
                                                        f"retry after {seconds}s"}))

    return rate_limit
