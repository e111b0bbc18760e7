"""Per-client rate limits for the HTTP endpoints (push, labels): a token bucket per client IP.

Each client IP owns a bucket of ``burst`` tokens refilled at ``rate`` per second; a request
takes one token, and without one it gets ``429 Too Many Requests`` with ``Retry-After`` (whole
seconds until a token is back). The limiter is pure apart from the injected clock; the aiohttp
middleware is the thin I/O edge. The client is ``request.remote`` (the socket's peer):
``X-Forwarded-For`` is never trusted, as anyone can send it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

_MAX_CLIENTS = 10_000  # buckets kept before idle (full) ones are forgotten


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
        self._buckets: dict[str, _Bucket] = {}
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
                if len(self._buckets) >= _MAX_CLIENTS:
                    self._forget_idle(now)
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled completely: forgetting them changes nothing."""
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= _MAX_CLIENTS:  # a flood of distinct clients: start afresh
            self._buckets.clear()


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
        wait = limiter.take(request.remote or "unknown")
        if wait <= 0:
            return await handler(request)
        if on_limited is not None:
            on_limited(request)
        seconds = retry_after(wait)
        return web.Response(status=429, content_type="application/json", headers={"Retry-After": seconds},
                            body=orjson.dumps({"error": f"too many requests from {request.remote}; "
                                                        f"retry after {seconds}s"}))

    return rate_limit
