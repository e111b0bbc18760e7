"""The token bucket behind the push and labels endpoints' 429s (pure: an injected clock)."""

from __future__ import annotations

import pytest

from finsent.rate_limit import TokenBucketLimiter, client_key, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate():
    clock = Clock()
    limiter = TokenBucketLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("10.0.0.1")
    assert wait == pytest.approx(0.5)  # one token every 1/rate seconds
    assert retry_after(wait) == "1"
    clock.now += 0.5
    assert limiter.take("10.0.0.1") == 0.0
    assert limiter.take("10.0.0.1") > 0
    clock.now += 100  # refills to the burst, never above it
    assert [limiter.take("10.0.0.1") for _ in range(4)].count(0.0) == 3


def test_clients_have_separate_buckets():
    limiter = TokenBucketLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_zero_rate_means_no_limit():
    limiter = TokenBucketLimiter(rate=0, burst=1, clock=Clock())
    assert not limiter.enabled
    assert all(limiter.take("a") == 0.0 for _ in range(1000))


def test_many_distinct_clients_do_not_grow_memory_without_bound(monkeypatch):
    import finsent.rate_limit as module

    monkeypatch.setattr(module, "_MAX_CLIENTS", 50)
    clock = Clock()
    limiter = TokenBucketLimiter(rate=1.0, burst=2, clock=clock)
    for i in range(500):
        limiter.take(f"198.51.100.{i}")
        clock.now += 0.01
    assert len(limiter._buckets) <= 50
    assert limiter.take("198.51.100.499") == 0.0  # a recent client keeps its (partly used) bucket


def test_a_flood_of_new_clients_does_not_lift_the_limit_of_one_still_sending(monkeypatch):
    import finsent.rate_limit as module

    monkeypatch.setattr(module, "_MAX_CLIENTS", 50)
    limiter = TokenBucketLimiter(rate=0.001, burst=1, clock=Clock())  # the clock stands still: nothing refills
    assert limiter.take("203.0.113.7") == 0.0
    for i in range(500):  # the busy client keeps sending (and being refused) amid the flood
        limiter.take(f"198.51.100.{i}")
        assert limiter.take("203.0.113.7") > 0, f"the limit was lifted after {i + 1} new clients"


def test_an_ipv6_client_is_its_slash_64_and_an_ipv4_mapped_one_its_ipv4_address():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("::ffff:192.0.2.5") == client_key("192.0.2.5") == "192.0.2.5"
    assert client_key(None) == "unknown" and client_key("/run/finsent.sock") == "/run/finsent.sock"


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after(0.01) == "1" and retry_after(1.0) == "1" and retry_after(1.2) == "2"
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate=1, burst=0)
