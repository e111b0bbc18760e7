"""HTTP GET for polling sources: size-limited, timeouts, errors mapped to :class:`FetchError`.

httpx's timeout applies to each step (connect, each read), so a server that sends a byte every
few seconds would hold a source forever; every fetch also has a total deadline. The size limit
holds for the decoded body, decoded step by step (:mod:`ingest.sources.decoding`), not after httpx
inflated a chunk whole. Redirects are followed here, not by httpx, so that the headers a source
was given (an API key) never go to another host. A source whose host is public may not lead a fetch to
an internal address (:mod:`ingest.sources.addresses`), however it redirects; each hop of a fetch is judged (see
:meth:`HttpFetcher._client_for`).
"""

from __future__ import annotations

import asyncio
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
    """Three shared ``httpx.AsyncClient``s; bodies over ``max_bytes`` are refused while streaming.

    ``timeout``: seconds for each step; ``deadline``: seconds for the whole fetch (default 3 × timeout).
    ``internal_addresses`` (FINSENT_INGEST_INTERNAL_ADDRESSES): "auto" lets a URL whose host is internal (all its
    addresses are) reach internal addresses while every hop so far did, and holds any other hop to public addresses;
    "forbid" holds every fetch to them; "allow" none. Each kind of connection has a client (a pool) of its own, so
    that no fetch reuses a connection of another kind. ``resolver`` and ``connector``: see
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
        self._guarded: httpx.AsyncClient | None = None  # public addresses only
        self._inside: httpx.AsyncClient | None = None  # internal addresses only

    async def start(self) -> None:
        if self._client is None:
            ssl_context = httpx.create_ssl_context()  # one for the three clients (each would load the CA bundle)
            options = {"timeout": self.timeout, "follow_redirects": False, "verify": ssl_context,
                       "headers": {"User-Agent": self.user_agent, "Accept-Encoding": ACCEPT_ENCODING}}
            self._client = httpx.AsyncClient(**options)
            self._guarded, self._inside = (
                httpx.AsyncClient(**options, transport=guarded_transport(
                    GuardedBackend(self._resolve, self._connector, internal=internal), ssl_context))
                for internal in (False, True))

    async def close(self) -> None:
        if self._client is not None:
            for client in (self._client, self._guarded, self._inside):
                await client.aclose()
            self._client = self._guarded = self._inside = None

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
        request = self._client.build_request("GET", url, headers=headers, params=params)  # the clients' options agree
        inside = True  # every hop so far connected to internal addresses (none yet)
        for _ in range(MAX_REDIRECTS + 1):
            client, inside = await self._client_for(request.url, inside)
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

    async def _client_for(self, url: httpx.URL, inside: bool) -> tuple[httpx.AsyncClient, bool]:
        """The client for one hop of a fetch to ``url``, and whether the hops so far, this one included, all stayed
        inside (``inside``: those before it did).

        Under "auto" a hop that the environment sends through a proxy goes to it: where egress needs the proxy, it is
        the network's boundary (and a direct connection would fail); "forbid" connects directly and checks. Any
        other hop connects directly: to internal addresses only while the source's host and every hop since were
        internal, else to public ones only. So neither a redirect to a host the proxy does not handle (NO_PROXY:
        localhost, 169.254.169.254) nor a name that turns public after the lookup here leads a fetch inside."""
        if self.internal_addresses != "auto":
            return (self._client, True) if self.internal_addresses == "allow" else (self._guarded, False)
        if _proxied(self._client, url):
            return self._client, False
        if inside and await self._internal(url):
            return self._inside, True
        return self._guarded, False

    async def _internal(self, url: httpx.URL) -> bool:
        """Whether ``url``'s host has internal addresses only (the name as it will be connected to: IDNA-encoded)."""
        try:
            addresses = await self._resolve(url.raw_host.decode("ascii"),
                                            url.port or (443 if url.scheme == "https" else 80))
        except OSError:
            return False  # the guarded client resolves it again and tells why it cannot
        return all_internal(addresses)

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


def _proxied(client: httpx.AsyncClient, url: httpx.URL) -> bool:
    """Whether ``client`` sends ``url`` through a proxy from the environment (HTTP(S)_PROXY, ALL_PROXY, minus
    NO_PROXY). httpx's own choice, not urllib's reading of the same variables: they differ (NO_PROXY=host:port,
    .example.com), and a hop taken for proxied that httpx connects directly would not be checked. httpx has no public
    way to ask, so this reads two private attributes of httpx 0.28's client (``_transport_for_url``, ``_transport``);
    the proxy tests in tests/unit/test_ingest_internal_addresses.py fail if a new httpx changes them."""
    return client._transport_for_url(url) is not client._transport
