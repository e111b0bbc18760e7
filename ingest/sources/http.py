"""HTTP GET for polling sources: size-limited, timeouts, errors mapped to :class:`FetchError`.

httpx's timeout applies to each step (connect, each read), so a server that sends a byte every
few seconds would hold a source forever; every fetch also has a total deadline. The size limit
holds for the decoded body, decoded step by step (:mod:`ingest.sources.decoding`), not after httpx
inflated a chunk whole. Redirects are followed here, not by httpx, so that the headers a source
was given (an API key) never go to another host. A source whose host is public may not lead a fetch to
an internal address (:mod:`ingest.sources.addresses`), however it redirects.
"""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass, field
from typing import Literal

import httpcore
import httpx

from finsent.settings import without_credentials
from ingest.backoff import parse_retry_after
from ingest.sources.addresses import (ForbiddenAddress, GuardedBackend, Resolver, all_internal, guarded_transport,
                                      resolve)
from ingest.sources.decoding import ACCEPT_ENCODING, BoundedDecoder, TooLarge, Undecodable

MAX_REDIRECTS = 10


class FetchError(Exception):
    """A poll that failed as a whole; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched (not http(s), unreadable, no host), or None when it can."""
    if not url.startswith(("http://", "https://")):
        return "not an http:// or https:// URL"
    try:
        parsed = httpx.URL(url)  # the parser that will fetch it: a prefix check let "http://[::1/feed" through
    except httpx.InvalidURL as exc:
        return f"not a valid URL ({exc})"
    return None if parsed.host else "the URL has no host"


@dataclass(slots=True)
class HttpResponse:
    status: int
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


InternalAddresses = Literal["auto", "allow", "forbid"]


class HttpFetcher:
    """Two shared ``httpx.AsyncClient``s; bodies over ``max_bytes`` are refused while streaming.

    ``timeout``: seconds for each step; ``deadline``: seconds for the whole fetch (default 3 × timeout).
    ``internal_addresses`` (FINSENT_INGEST_INTERNAL_ADDRESSES): "auto" lets a URL whose host is internal (all its
    addresses are) connect anywhere, and holds any other to public addresses, its redirects included; "forbid" holds
    every fetch to them; "allow" none. Held fetches go through a client of their own, so that they never reuse a
    connection another fetch opened to an internal address. ``resolver`` and ``connector``: see
    :class:`~ingest.sources.addresses.GuardedBackend`.
    """

    def __init__(self, *, timeout: float = 20.0, max_bytes: int = 5_000_000, user_agent: str = "finsent",
                 deadline: float | None = None, internal_addresses: InternalAddresses = "auto",
                 resolver: Resolver = resolve, connector: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.timeout = timeout
        self.deadline = deadline if deadline is not None else 3 * timeout
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self.internal_addresses = internal_addresses
        self._resolve = resolver
        self._connector = connector
        self._client: httpx.AsyncClient | None = None  # no address held; proxies from the environment are used
        self._guarded: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            options = {"timeout": self.timeout, "follow_redirects": False,
                       "headers": {"User-Agent": self.user_agent, "Accept-Encoding": ACCEPT_ENCODING}}
            self._client = httpx.AsyncClient(**options)
            self._guarded = httpx.AsyncClient(
                **options, transport=guarded_transport(GuardedBackend(self._resolve, self._connector)))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            await self._guarded.aclose()
            self._client = self._guarded = None

    async def get(self, url: str, *, headers: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> HttpResponse:
        """The response (200-299 or 304); any other outcome raises FetchError, whose detail quotes ``url`` with its
        credentials masked (a feed's ``?apikey=``)."""
        if self._client is None:
            await self.start()
        shown = without_credentials(url)
        try:
            async with asyncio.timeout(self.deadline):
                return await self._get(url, shown, headers, params)
        except TimeoutError:
            raise FetchError("timeout", f"{shown}: not complete after {self.deadline}s") from None
        except httpx.TimeoutException:
            raise FetchError("timeout", f"{shown}: timed out after {self.timeout}s") from None
        except httpx.InvalidURL as exc:  # not an httpx.HTTPError
            raise FetchError("bad_url", f"{shown}: {exc}") from None
        except ForbiddenAddress as exc:
            raise FetchError("forbidden_address",
                             f"{shown}: {exc} (FINSENT_INGEST_INTERNAL_ADDRESSES={self.internal_addresses})") from None
        except httpx.HTTPError as exc:
            raise FetchError("network", f"{shown}: {type(exc).__name__}: {exc}") from None

    async def _get(self, url: str, shown: str, headers: dict[str, str] | None,
                   params: dict[str, str] | None) -> HttpResponse:
        client = self._guarded if await self._held(url) else self._client
        request = client.build_request("GET", url, headers=headers, params=params)
        for _ in range(MAX_REDIRECTS + 1):
            response = await client.send(request, stream=True)
            try:
                if response.next_request is None:
                    return await self._read(shown, response)
                after = response.next_request
            finally:
                await response.aclose()
            if not _may_carry_headers(request.url, after.url):
                for name in headers or {}:  # httpx drops only Authorization; an API key may be X-Api-Key
                    after.headers.pop(name, None)
            request = after
        raise FetchError("network", f"{shown}: more than {MAX_REDIRECTS} redirects")

    async def _held(self, url: str) -> bool:
        """Whether a fetch of ``url`` (the source's own) may connect to public addresses only."""
        if self.internal_addresses != "auto":
            return self.internal_addresses == "forbid"
        parsed = httpx.URL(url)
        if _proxied(parsed):
            # Where egress goes through a proxy, the proxy is the network's boundary (and a direct connection
            # would fail): "auto" leaves such fetches to it, "forbid" connects directly and checks.
            return False
        try:
            addresses = await self._resolve(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
        except OSError:
            return True  # the guarded client resolves it again and tells why it cannot
        return not all_internal(addresses)

    async def _read(self, shown: str, response: httpx.Response) -> HttpResponse:
        """``response``'s body; ``shown`` (the URL as messages quote it) names it in a FetchError."""
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError("too_large", f"{shown}: body of {declared} bytes is over {self.max_bytes}")
        if response.status_code == 304:
            return HttpResponse(304, str(response.url), dict(response.headers))
        if response.status_code == 429 or response.status_code >= 400:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            reason = "rate_limited" if response.status_code == 429 else f"http_{response.status_code}"
            raise FetchError(reason, f"{shown}: HTTP {response.status_code}", retry_after)
        try:
            decoder = BoundedDecoder(response.headers.get("content-encoding"), self.max_bytes)
            chunks, size = [], 0
            async for raw in response.aiter_raw():
                chunk = decoder.decode(raw)
                size += len(chunk)
                if size > self.max_bytes:
                    raise TooLarge
                chunks.append(chunk)
            chunks.append(decoder.flush())
        except TooLarge:
            raise FetchError("too_large", f"{shown}: body is over {self.max_bytes} bytes") from None
        except Undecodable as exc:
            raise FetchError("bad_encoding", f"{shown}: {exc}") from None
        return HttpResponse(response.status_code, str(response.url), dict(response.headers), b"".join(chunks))


def _may_carry_headers(source: httpx.URL, target: httpx.URL) -> bool:
    """Whether a redirect may take a source's own headers along: to the same host, and not from https to http."""
    return target.host == source.host and not (source.scheme == "https" and target.scheme != "https")


def _proxied(url: httpx.URL) -> bool:
    """Whether the environment sends ``url`` through a proxy (HTTP(S)_PROXY, ALL_PROXY, minus NO_PROXY), as httpx
    reads it."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(url.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(url.host)
