"""The token bucket behind the push and labels endpoints' 429s (pure: an injected clock)."""

from __future__ import annotations

import pytest

from finsent.rate_limit import TokenBucketLimiter, retry_after


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


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after(0.01) == "1" and retry_after(1.0) == "1" and retry_after(1.2) == "2"
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate=1, burst=0)
