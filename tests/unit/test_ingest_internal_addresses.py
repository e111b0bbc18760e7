"""A source on a public host may not lead a fetch to an internal address: not by a redirect, not by DNS rebinding.

Every local server is on loopback, so these tests simulate the internet: a resolver gives made-up public names
public addresses, and a connector routes those addresses to the local server. The guard sees the addresses the
resolver gave, as it would see real ones.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import httpcore
import httpx
import pytest

from finsent.settings import SettingsError, load_settings
from ingest.backoff import Backoff
from ingest.cli import _fetcher
from ingest.runner import poll_forever
from ingest.sources.addresses import GuardedBackend, all_internal, forbidden
from ingest.sources.http import FetchError, HttpFetcher
from ingest.sources.rss import RssSource
from tests.unit.test_ingest_fetch_limits import FEED, _Site
from tests.unit.test_ingest_pipeline import started_pipeline

# Global addresses, never contacted: the connector routes them to 127.0.0.1. Documentation ranges (203.0.113.0/24)
# will not do, as the policy counts them private, as Python's tables do.
NEWS, CDN = "93.184.215.14", "151.101.1.69"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                   "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """A proxy in the environment would take public feeds out of the guard ("auto"): these tests need none."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize("address,reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::a9fe:a9fe", "link-local"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.1.2.3", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),  # IPv4 in IPv6 clothing
    ("100.100.100.200", "non-public"),  # carrier-grade NAT: Alibaba Cloud's metadata service
    ("203.0.113.7", "private"), ("2001:db8::1", "private"),  # documentation ranges are not public
    # An IPv4 address inside IPv6 is judged as itself: NAT64's well-known prefix, 6to4.
    ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::a00:7", "private"), ("64:ff9b::a9fe:a9fe", "link-local"),
    ("2002:7f00:1::", "loopback"), ("2002:a9fe:a9fe::1", "link-local"), ("2002:a00:7:1::5", "private"),
    ("::127.0.0.1", "reserved"), ("::ffff:0:127.0.0.1", "reserved"),  # IPv4-compatible, IPv4-translated
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),  # Teredo
    ("fec0::1", "site-local"), ("fe80::1%eth0", "link-local"),
])
def test_addresses_that_are_not_public_are_named(address: str, reason: str) -> None:
    assert forbidden(ip(address)) == reason


# 64:ff9b::5db8:d70e is NEWS as DNS64 gives it to an IPv6-only host: public, not "reserved" (all of ::/8 is, in
# Python's tables), else every IPv4-only feed behind NAT64 would be refused under "forbid" and judged internal
# (unguarded) under "auto".
@pytest.mark.parametrize("address", [NEWS, CDN, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::5db8:d70e", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden(ip(address)) is None


@pytest.mark.parametrize("addresses,internal", [
    (["127.0.0.1"], True), (["10.0.0.5", "fd00::5"], True),
    ([NEWS], False), (["10.0.0.5", NEWS], False),  # also public: held, and only the public address is used
    (["64:ff9b::5db8:d70e"], False), (["64:ff9b::a00:5"], True),  # behind DNS64
    ([], False),
])
def test_a_host_is_internal_when_all_its_addresses_are(addresses: list[str], internal: bool) -> None:
    assert all_internal(ip(address) for address in addresses) is internal


class Internet:
    """The simulated network: ``names`` resolve (each lookup takes the next answer while there are several: DNS
    rebinding), other names and addresses are themselves; connections to ``routed`` addresses reach 127.0.0.1."""

    def __init__(self, names: dict[str, list[list[str]]], routed: tuple[str, ...] = (NEWS, CDN)) -> None:
        self.names = names
        self.routed = routed
        self.lookups: list[str] = []
        self.connected: list[str] = []

    async def resolve(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.lookups.append(host)
        answers = self.names.get(host)
        if answers is None:
            return [ip("127.0.0.1" if host == "localhost" else host)]
        return [ip(text) for text in (answers.pop(0) if len(answers) > 1 else answers[0])]

    def connector(self) -> httpcore.AsyncNetworkBackend:
        internet = self

        class Routed(httpcore.AnyIOBackend):
            async def connect_tcp(self, host: str, port: int, **options) -> httpcore.AsyncNetworkStream:
                internet.connected.append(host)
                return await super().connect_tcp("127.0.0.1" if host in internet.routed else host, port, **options)

        return Routed()

    def fetcher(self, internal_addresses: str = "auto") -> HttpFetcher:
        return HttpFetcher(timeout=10, internal_addresses=internal_addresses, resolver=self.resolve,
                           connector=self.connector())


async def _get(fetcher: HttpFetcher, url: str) -> object:
    try:
        return await fetcher.get(url)
    finally:
        await fetcher.close()


@pytest.mark.parametrize("target,named", [
    ("http://127.0.0.1:{port}/admin", "not connecting to 127.0.0.1, a loopback address"),
    ("http://localhost:{port}/admin", "not connecting to localhost (127.0.0.1), a loopback address"),
    ("http://intranet.corp:{port}/admin", "not connecting to intranet.corp (10.0.0.7), a private address"),
    ("http://169.254.169.254/latest/meta-data/", "not connecting to 169.254.169.254, a link-local address"),
    ("http://[::ffff:127.0.0.1]:{port}/admin", "not connecting to ::ffff:127.0.0.1, a loopback address"),
])
async def test_a_public_feed_cannot_redirect_a_fetch_inside(target: str, named: str) -> None:
    internet = Internet({"news.example.com": [[NEWS]], "intranet.corp": [["10.0.0.7"]]})
    async with _Site() as site:
        site.redirect("/feed", lambda: target.format(port=site.port))
        site.answer("/admin", b"the admin page")
        with pytest.raises(FetchError) as caught:
            await _get(internet.fetcher(), site.url("/feed", host="news.example.com"))
    assert caught.value.reason == "forbidden_address"
    assert caught.value.detail == (f"http://news.example.com:{site.port}/feed: {named} "
                                   "(FINSENT_INGEST_INTERNAL_ADDRESSES=auto)")
    assert "/admin" not in site.seen and internet.connected == [NEWS]
    # The connection went to the address checked, and the server was still asked by name.
    assert site.seen["/feed"]["Host"] == f"news.example.com:{site.port}"


async def test_a_name_that_turns_internal_between_check_and_connection_is_refused() -> None:
    # DNS rebinding: public when ingest decides whether to hold the fetch, loopback when it connects.
    internet = Internet({"news.example.com": [[NEWS], ["127.0.0.1"]]})
    async with _Site() as site:
        site.answer("/feed", FEED)
        with pytest.raises(FetchError) as caught:
            await _get(internet.fetcher(), site.url("/feed", host="news.example.com"))
    assert caught.value.reason == "forbidden_address"
    assert "not connecting to news.example.com (127.0.0.1), a loopback address" in caught.value.detail
    assert internet.lookups == ["news.example.com", "news.example.com"] and internet.connected == []
    assert site.seen == {}


async def test_a_public_feed_may_redirect_to_another_public_host() -> None:
    internet = Internet({"news.example.com": [[NEWS]], "cdn.example.net": [["10.9.9.9", CDN]]})
    async with _Site() as site:
        site.redirect("/feed", lambda: site.url("/moved", host="cdn.example.net"))
        site.answer("/moved", FEED)
        response = await _get(internet.fetcher(), site.url("/feed", host="news.example.com"))
    assert response.status == 200 and response.body == FEED
    assert internet.connected == [NEWS, CDN]  # the CDN's private address was never tried
    assert site.seen["/moved"]["Host"] == f"cdn.example.net:{site.port}"


async def test_an_intranet_feed_may_redirect_within_the_intranet_unless_forbidden() -> None:
    internet = Internet({})
    async with _Site() as site:
        site.redirect("/feed", lambda: site.url("/moved", host="localhost"))
        site.answer("/moved", FEED)
        response = await _get(internet.fetcher(), site.url("/feed"))
        assert response.status == 200 and response.body == FEED
        with pytest.raises(FetchError) as caught:
            await _get(internet.fetcher("forbid"), site.url("/feed"))
    assert caught.value.reason == "forbidden_address"
    assert caught.value.detail.endswith("not connecting to 127.0.0.1, a loopback address "
                                        "(FINSENT_INGEST_INTERNAL_ADDRESSES=forbid)")


@pytest.mark.parametrize("setting,refused", [("auto", True), ("forbid", True), ("allow", False)])
async def test_allow_lets_a_public_feed_redirect_inside(setting: str, refused: bool) -> None:
    # "localhost" is public to the guard here, while the system resolves it to loopback: held, the fetch reaches
    # the site through the connector and is refused the redirect; allowed, it is a fetch as before the guard.
    internet = Internet({"localhost": [[NEWS]]})
    async with _Site() as site:
        site.redirect("/feed", lambda: site.url("/moved"))
        site.answer("/moved", FEED)
        fetched = _get(internet.fetcher(setting), site.url("/feed", host="localhost"))
        if refused:
            with pytest.raises(FetchError, match="not connecting to 127.0.0.1, a loopback address"):
                await fetched
        else:
            response = await fetched
            assert response.status == 200 and response.body == FEED
    assert ("/moved" in site.seen) is not refused and "/feed" in site.seen


async def test_a_name_that_turns_public_after_it_was_judged_internal_is_refused() -> None:
    # DNS rebinding the other way: internal when the fetch is judged (an intranet feed, whose redirects may go
    # inside), public when it connects, where the feed's own server would redirect it to the admin page.
    internet = Internet({"localhost": [["10.0.0.7"], [NEWS]]})
    async with _Site() as site:
        site.redirect("/feed", lambda: site.url("/admin"))
        site.answer("/admin", b"the admin page")
        with pytest.raises(FetchError) as caught:
            await _get(internet.fetcher(), site.url("/feed", host="localhost"))
    assert caught.value.reason == "forbidden_address"
    assert f"not connecting to localhost ({NEWS}), a public address: the fetch was judged internal" in \
        caught.value.detail
    assert site.seen == {} and internet.connected == []


async def test_an_intranet_feed_that_redirects_to_a_public_host_is_held_from_then_on() -> None:
    internet = Internet({"intranet.corp": [["10.0.0.7"]], "news.example.com": [[NEWS]]},
                        routed=(NEWS, "10.0.0.7"))
    async with _Site() as site:
        site.redirect("/feed", lambda: site.url("/moved", host="news.example.com"))
        site.redirect("/moved", lambda: site.url("/admin", host="intranet.corp"))
        site.answer("/admin", b"the admin page")
        with pytest.raises(FetchError) as caught:
            await _get(internet.fetcher(), site.url("/feed", host="intranet.corp"))
    assert caught.value.reason == "forbidden_address"
    assert "not connecting to intranet.corp (10.0.0.7), a private address" in caught.value.detail
    assert "/admin" not in site.seen and internet.connected == ["10.0.0.7", NEWS]


async def test_a_proxied_feed_cannot_redirect_to_a_host_the_proxy_is_bypassed_for(monkeypatch) -> None:
    # Under "auto" a proxied feed is left to the proxy; NO_PROXY commonly names localhost and the metadata address,
    # and a redirect there is a direct connection, which the guard must check.
    internet = Internet({"news.example.com": [[NEWS]]})
    async with _Site() as site:  # the proxy, which answers for the feed's server too
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{site.port}")
        monkeypatch.setenv("NO_PROXY", "localhost,169.254.169.254")
        site.redirect("/feed", lambda: site.url("/admin", host="localhost"))
        site.answer("/admin", b"the admin page")
        with pytest.raises(FetchError) as caught:
            await _get(internet.fetcher(), f"http://news.example.com:{site.port}/feed")
    assert caught.value.reason == "forbidden_address"
    assert "not connecting to localhost (127.0.0.1), a loopback address" in caught.value.detail
    assert "/feed" in site.seen and "/admin" not in site.seen and internet.connected == []


@pytest.mark.parametrize("setting,proxied", [("auto", True), ("forbid", False), ("allow", True)])
async def test_behind_a_proxy_auto_leaves_a_public_feed_to_the_proxy(setting: str, proxied: bool,
                                                                     monkeypatch) -> None:
    # Guarded fetches connect directly; where egress must go through a proxy, "auto" must not turn every public
    # feed into a connection that cannot be made. Whether a URL is proxied is httpx's choice: urllib reads
    # NO_PROXY=host:port as naming no host, while httpx connects to that port directly.
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "news.example.com:8080")
    fetcher = Internet({"news.example.com": [[NEWS]]}).fetcher(setting)
    await fetcher.start()
    try:
        client, _ = await fetcher._client_for(httpx.URL("http://news.example.com/feed"), True)
        assert (client is fetcher._client) is proxied
        client, inside = await fetcher._client_for(httpx.URL("http://news.example.com:8080/feed"), True)
        assert (client is fetcher._client) is (setting == "allow")  # not proxied: checked, unless allowed
        assert inside is (setting == "allow")
    finally:
        await fetcher.close()


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "news..example.com"])
@pytest.mark.parametrize("setting", ["auto", "forbid"])
async def test_a_name_dns_cannot_look_up_is_a_network_error(host: str, setting: str) -> None:
    # httpx's parser lets a label over 63 characters or an empty one through; the lookup's UnicodeError was no
    # FetchError, and every poll of the source was logged as a bug.
    with pytest.raises(FetchError) as caught:
        await _get(HttpFetcher(timeout=5, internal_addresses=setting), f"http://{host}/feed")
    assert caught.value.reason == "network" and f"cannot resolve {host}: not a name DNS" in caught.value.detail


async def test_a_name_that_does_not_resolve_is_a_network_error() -> None:
    async def nowhere(host: str, port: int) -> list:
        raise OSError(f"no such name {host}")

    with pytest.raises(httpcore.ConnectError, match="cannot resolve news.invalid: no such name news.invalid"):
        await GuardedBackend(nowhere).connect_tcp("news.invalid", 80)
    fetcher = HttpFetcher(timeout=5, resolver=nowhere)
    with pytest.raises(FetchError) as caught:
        await _get(fetcher, "http://news.invalid/feed")
    assert caught.value.reason == "network" and "cannot resolve news.invalid" in caught.value.detail


class Counted(RssSource):
    """Stops the polling loop at its ``last`` poll."""

    def __init__(self, *args, stop: asyncio.Event, last: int, **options) -> None:
        super().__init__(*args, **options)
        self.stop, self.last, self.polls = stop, last, 0

    async def fetch(self):
        self.polls += 1
        if self.polls == self.last:
            self.stop.set()
        return await super().fetch()


async def test_a_refused_redirect_is_counted_and_the_source_keeps_polling(tmp_path: Path) -> None:
    internet = Internet({"news.example.com": [[NEWS]]})
    async with _Site() as site:
        site.redirect("/feed", lambda: "http://169.254.169.254/latest/meta-data/")
        fetcher, stop = internet.fetcher(), asyncio.Event()
        source = Counted(fetcher, site.url("/feed", host="news.example.com"), name="rss:news", interval=0,
                         stop=stop, last=3)
        try:
            with started_pipeline(tmp_path) as pipeline:
                await poll_forever(source, pipeline, stop, backoff=Backoff(base=0, cap=0))
                errors = pipeline.metrics.value("finsent_ingest_errors_total", source="rss:news",
                                                reason="forbidden_address")
                failing = pipeline.metrics.value("finsent_ingest_consecutive_fetch_failures", source="rss:news")
        finally:
            await fetcher.close()
    assert (source.polls, errors, failing) == (3, 3, 3)


def test_the_setting_is_validated_and_reaches_the_fetcher(monkeypatch) -> None:
    assert _fetcher(load_settings()).internal_addresses == "auto"
    monkeypatch.setenv("FINSENT_INGEST_INTERNAL_ADDRESSES", "forbid")
    assert _fetcher(load_settings()).internal_addresses == "forbid"
    monkeypatch.setenv("FINSENT_INGEST_INTERNAL_ADDRESSES", "never")
    with pytest.raises(SettingsError, match="FINSENT_INGEST_INTERNAL_ADDRESSES: .*'auto', 'allow' or 'forbid'"):
        load_settings()
