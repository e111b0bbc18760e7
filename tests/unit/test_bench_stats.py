"""Pure statistics of the benchmarks: percentiles, latencies, drain rates, pacing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import stats

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_percentile_interpolates_between_ranks():
    assert stats.percentile([1.0, 2.0], 50) == 1.5
    assert stats.percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert stats.percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert stats.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=100))
def test_percentile_matches_numpy(values, q):
    assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_nonsense(values, q):
    with pytest.raises(ValueError):
        stats.percentile(values, q)


def test_latency_summary():
    summary = stats.latency_summary([0.1] * 98 + [0.5, 2.0])
    assert summary["n"] == 100
    assert summary["p50_s"] == pytest.approx(0.1)
    assert summary["max_s"] == 2.0
    assert 0.5 <= summary["p99_s"] <= 2.0
    assert summary["mean_s"] == pytest.approx((9.8 + 2.5) / 100)


def test_latencies_from_aware_pairs_only():
    assert stats.latencies([(T0, T0 + timedelta(milliseconds=250))]) == [0.25]
    with pytest.raises(ValueError, match="timezone-aware"):
        stats.latencies([(T0.replace(tzinfo=None), T0)])


def test_drain_rate_starts_the_clock_at_the_first_batch():
    # batches of 10 every 0.5 s: the first batch's 10 docs are start-up, 30 docs in 1.5 s follow
    stamps = [T0 + timedelta(seconds=0.5 * b) for b in range(4) for _ in range(10)]
    drain = stats.drain_rate(stamps)
    assert drain["docs_per_s"] == pytest.approx(20.0)
    assert drain["docs"] == 30
    assert drain["batches"] == 4
    assert drain["seconds"] == pytest.approx(1.5)


def test_drain_rate_of_one_batch_is_an_error():
    with pytest.raises(ValueError, match="single batch"):
        stats.drain_rate([T0] * 5)
    with pytest.raises(ValueError):
        stats.drain_rate([])


def test_rate_and_ratio():
    assert stats.rate(50, 2.0) == 25.0
    with pytest.raises(ValueError):
        stats.rate(1, 0)
    assert stats.ratio(8.0, 10.0) == 0.8
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(1.0, 0.0) is None


def test_send_offsets_are_evenly_paced():
    assert stats.send_offsets(4, 2.0) == [0.0, 0.5, 1.0, 1.5]
    with pytest.raises(ValueError):
        stats.send_offsets(3, 0)
