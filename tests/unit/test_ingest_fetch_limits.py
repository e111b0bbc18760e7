"""What a hostile feed or API server can make a fetch do: inflate a packed body, send a source's key elsewhere."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable

import httpx
import pytest
from aiohttp import web

from ingest.sources.decoding import BoundedDecoder, TooLarge, Undecodable
from ingest.sources.http import MAX_REDIRECTS, FetchError, HttpFetcher, _may_carry_headers

FEED = b"<rss version='2.0'><channel><title>t</title>" + b"<item><title>Acme rises</title></item>" * 200 + b"</rss>"


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


def _zeros_gzipped(mib: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    return b"".join([packer.compress(block) for _ in range(mib)] + [packer.flush()])


def _deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


class _Site:
    """A local HTTP server whose paths answer raw bytes with the headers given (aiohttp encodes nothing itself),
    or redirect; ``seen`` keeps each path's last request headers."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self._dispatch)
        self.routes: dict[str, Callable[[], web.Response]] = {}
        self.seen: dict[str, dict[str, str]] = {}
        self.port = 0

    async def _dispatch(self, request: web.Request) -> web.Response:
        self.seen[request.path] = dict(request.headers)
        return self.routes[request.path]()

    def answer(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.routes[path] = lambda: web.Response(body=body, headers=headers or {})

    def redirect(self, path: str, to: Callable[[], str]) -> None:
        self.routes[path] = lambda: web.Response(status=302, headers={"Location": to()})

    async def __aenter__(self) -> _Site:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


async def _fetch(url: str, max_bytes: int = 1_000_000, **kwargs) -> object:
    fetcher = HttpFetcher(timeout=30, max_bytes=max_bytes)
    try:
        return await fetcher.get(url, **kwargs)
    finally:
        await fetcher.close()


async def test_a_body_packed_twice_is_refused_without_being_inflated_whole() -> None:
    # 64 MiB of zeros gzipped twice is a few hundred bytes on the wire. httpx inflated each network chunk in one
    # call, layer after layer: the whole 64 MiB was in memory before the 1 MB limit was looked at.
    bomb = _gzip(_zeros_gzipped(64))
    assert len(bomb) < 10_000
    async with _Site() as site:
        site.answer("/feed", bomb, {"Content-Encoding": "gzip, gzip", "Content-Type": "application/rss+xml"})
        tracemalloc.start()
        try:
            with pytest.raises(FetchError) as caught:
                await _fetch(site.url("/feed"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert caught.value.reason == "too_large" and "over 1000000 bytes" in caught.value.detail
    assert peak < 16 << 20, f"{peak / (1 << 20):.0f} MiB held while refusing it"


@pytest.mark.parametrize("encoding,packed", [
    ("gzip", _gzip(FEED)),
    ("x-gzip", _gzip(FEED)),
    ("deflate", _deflate(FEED, zlib.MAX_WBITS)),  # as the standard says: zlib-wrapped
    ("deflate", _deflate(FEED, -zlib.MAX_WBITS)),  # as some servers send it: raw
    ("gzip, gzip", _gzip(_gzip(FEED))),
    ("identity", FEED),
])
async def test_an_honest_encoded_body_is_decoded(encoding: str, packed: bytes) -> None:
    async with _Site() as site:
        site.answer("/feed", packed, {"Content-Encoding": encoding})
        response = await _fetch(site.url("/feed"))
    assert response.status == 200 and response.body == FEED
    assert site.seen["/feed"]["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize("encoding,body,detail", [
    ("br", b"\x1b\x03\x00", "Content-Encoding 'br' is not one finsent decodes"),
    ("gzip", b"this is not gzip", "not valid gzip data"),
])
async def test_a_body_that_cannot_be_decoded_is_a_fetch_error(encoding: str, body: bytes, detail: str) -> None:
    async with _Site() as site:
        site.answer("/feed", body, {"Content-Encoding": encoding})
        with pytest.raises(FetchError) as caught:
            await _fetch(site.url("/feed"))
    assert caught.value.reason == "bad_encoding" and detail in caught.value.detail


def test_the_decoder_never_gives_more_than_the_limit_in_any_layer() -> None:
    decoder = BoundedDecoder("gzip, gzip", 1000)
    with pytest.raises(TooLarge):
        decoder.decode(_gzip(_gzip(bytes(1001))))
    exact = BoundedDecoder("gzip", 1000)
    assert exact.decode(_gzip(bytes(1000))) + exact.flush() == bytes(1000)
    with pytest.raises(Undecodable):
        BoundedDecoder("gzip, compress", 1000)


async def test_a_redirect_to_another_host_does_not_take_the_source_s_headers() -> None:
    async with _Site() as site:
        site.answer("/articles", b'{"articles": []}', {"Content-Type": "application/json"})
        site.redirect("/moved-away", lambda: site.url("/articles", host="localhost"))
        site.redirect("/moved-here", lambda: site.url("/articles"))
        keys = {"X-Api-Key": "key-of-the-news-api", "Authorization": "Bearer token-of-the-news-api"}
        away = await _fetch(site.url("/moved-away"), headers=keys)
        assert away.status == 200 and away.url.startswith("http://localhost:")
        assert {"X-Api-Key", "Authorization"}.isdisjoint(site.seen["/articles"])
        assert site.seen["/moved-away"]["X-Api-Key"] == "key-of-the-news-api"
        here = await _fetch(site.url("/moved-here"), headers=keys)
        assert here.status == 200 and site.seen["/articles"]["X-Api-Key"] == "key-of-the-news-api"


async def test_a_redirect_loop_ends_in_a_fetch_error() -> None:
    async with _Site() as site:
        site.redirect("/loop", lambda: site.url("/loop"))
        with pytest.raises(FetchError) as caught:
            await _fetch(site.url("/loop"))
    assert caught.value.reason == "network" and f"more than {MAX_REDIRECTS} redirects" in caught.value.detail


@pytest.mark.parametrize("source,target,carried", [
    ("https://api.example.com/v1", "https://api.example.com/v2", True),
    ("http://api.example.com/v1", "https://api.example.com/v1", True),  # an upgrade to TLS
    ("https://api.example.com/v1", "http://api.example.com/v1", False),  # a downgrade: the key in clear text
    ("https://api.example.com/v1", "https://cdn.example.net/v1", False),
    ("https://api.example.com/v1", "https://example.com/v1", False),
])
def test_which_redirects_keep_a_source_s_headers(source: str, target: str, carried: bool) -> None:
    assert _may_carry_headers(httpx.URL(source), httpx.URL(target)) is carried
