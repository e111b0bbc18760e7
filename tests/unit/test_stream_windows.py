"""Window maths: sizes, counting, idempotent replays, baselines and z-scores by hand."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finsent.window_sizes import parse_window, parse_windows
from stream.aggregator import apply_events
from stream.windows import TickerWindows, WindowEvent, aggregate_id, refusal

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)  # the worker's clock: after every event of these tests
SIZES = {"1m": 60, "15m": 900, "1h": 3600, "1d": 86400}


def ev(offset: int, minute: float, label: str = "positive", score: float = 0.5, conf: float = 0.8,
       ticker: str = "AAPL", partition: int = 0) -> WindowEvent:
    return WindowEvent(ticker=ticker, doc_id=f"d{partition}-{offset}", at=T0 + timedelta(minutes=minute),
                       label=label, score=score, confidence=conf, raw_partition=partition, raw_offset=offset)


def test_parse_windows():
    assert parse_window("1m") == 60 and parse_window("1d") == 86400 and parse_window("15s") == 15
    assert parse_windows("1m,15m,1h,1d") == {"1m": 60, "15m": 900, "1h": 3600, "1d": 86400}
    for bad in ("0m", "5x", "m", "1m,1m", "60m,1h", ""):
        with pytest.raises(ValueError):
            parse_windows(bad)


def test_counts_means_and_weighted_mean():
    tw = TickerWindows("AAPL", {"1m": 60, "1h": 3600})
    tw.add(ev(0, 0.1, "positive", 0.8, 0.9))
    tw.add(ev(1, 0.5, "negative", -0.6, 0.5))
    tw.add(ev(2, 0.9, "neutral", 0.1, 0.2))
    touched = tw.add(ev(3, 1.2, "positive", 0.4, 1.0))
    assert touched == [("1m", int((T0 + timedelta(minutes=1)).timestamp())), ("1h", int(T0.timestamp()))]
    first = tw.aggregate("1m", int(T0.timestamp()), T0)
    assert first.count == 3
    assert first.counts == {"negative": 1, "neutral": 1, "positive": 1}
    assert first.mean_score == pytest.approx((0.8 - 0.6 + 0.1) / 3)
    assert first.weighted_mean_score == pytest.approx((0.9 * 0.8 + 0.5 * -0.6 + 0.2 * 0.1) / (0.9 + 0.5 + 0.2))
    assert first.window_end - first.window_start == timedelta(minutes=1)
    hour = tw.aggregate("1h", int(T0.timestamp()), T0)
    assert hour.count == 4
    assert aggregate_id(hour) == "AAPL|1h|2025-03-03T10:00:00Z"
    assert hour.model_dump(mode="json")["window_start"] == "2025-03-03T10:00:00Z"


def test_replayed_offsets_are_not_counted_twice():
    tw = TickerWindows("AAPL", {"1m": 60})
    for offset in range(5):
        tw.add(ev(offset, 0.1))
    assert tw.add(ev(3, 0.1)) is None  # replay after a crash
    assert tw.add(ev(3, 0.1, partition=1)) is not None  # another partition has its own offsets
    assert tw.aggregate("1m", int(T0.timestamp()), T0).count == 6


def test_z_scores_against_trailing_baseline():
    tw = TickerWindows("AAPL", {"1m": 60}, baseline=4, min_baseline=3)
    # minutes 0..3: counts 1,2,0(empty),3 with means; minute 4 is the window under test
    plan = {0: [0.2], 1: [0.0, 0.4], 3: [-0.2, -0.4, 0.0], 4: [0.9] * 6}
    offset = 0
    for minute, scores in plan.items():
        for s in scores:
            tw.add(ev(offset, minute + 0.5, score=s))
            offset += 1
    start = int((T0 + timedelta(minutes=4)).timestamp())
    agg = tw.aggregate("1m", start, T0)
    counts = [3, 0, 2, 1]  # the 4 slots before minute 4, newest first; minute 2 had none
    means = [-0.2, 0.2, 0.2]
    assert agg.volume_z == pytest.approx((6 - statistics.fmean(counts)) / statistics.stdev(counts))
    assert agg.sentiment_z == pytest.approx((0.9 - statistics.fmean(means)) / statistics.stdev(means))


def test_z_scores_need_a_baseline():
    tw = TickerWindows("AAPL", {"1m": 60}, baseline=10, min_baseline=3)
    tw.add(ev(0, 0))
    tw.add(ev(1, 1))
    agg = tw.aggregate("1m", int((T0 + timedelta(minutes=1)).timestamp()), T0)
    assert agg.volume_z is None and agg.sentiment_z is None  # one window of history: too little


def test_a_baseline_equal_but_for_rounding_gives_no_sentiment_z():
    # One repost scored 0.1, once or three times a minute: means 0.1 and 0.10000000000000002. Their stdev is
    # rounding (2e-17), and a z-score against it read 1.3e16 (a sentiment_shift alert at any threshold).
    tw = TickerWindows("AAPL", {"1m": 60}, baseline=4, min_baseline=3)
    offset = 0
    for minute, copies in enumerate([1, 3, 1, 3]):
        for _ in range(copies):
            tw.add(ev(offset, minute + 0.5, score=0.1))
            offset += 1
    tw.add(ev(offset, 4.5, score=0.2))
    agg = tw.aggregate("1m", int((T0 + timedelta(minutes=4)).timestamp()), T0)
    assert agg.sentiment_z is None  # as for a baseline of exactly equal means
    assert agg.volume_z is not None  # counts 1 and 3 do vary


def test_old_windows_are_pruned_and_late_events_refused():
    tw = TickerWindows("AAPL", {"1m": 60}, baseline=2)
    for minute in range(5):
        tw.add(ev(minute, minute))
    tw.prune()
    assert len(tw.series["1m"].windows) == 3
    assert tw.add(ev(99, 0.5)) == []  # minute 0 is gone: too late to count


def _minutes(counts: list[int]) -> tuple[dict, int]:
    """The stored state after ``counts[m]`` events in minute m, one batch each (pruned as the worker
    does); and the next free offset."""
    store: dict = {}
    offset = 0
    for minute, count in enumerate(counts):
        events = [ev(offset + i, minute + 0.1 * i) for i in range(count)]
        store.update(apply_events(store, events, {"1m": 60}, baseline=24, min_baseline=3, now=NOW).states)
        offset += count
    return store, offset


@pytest.mark.parametrize("late_minute, kept", [(30, 5), (26, 1)])
def test_a_late_event_s_baseline_stops_at_the_oldest_kept_window(late_minute, kept):
    # 50 minutes of 4, 5, 6 events a minute: minutes 25-49 are kept (baseline 24), older ones pruned.
    counts = [4 + minute % 3 for minute in range(50)]
    store, offset = _minutes(counts)
    [agg] = apply_events(store, [ev(offset, late_minute + 0.5)], {"1m": 60}, 24, 3, NOW).aggregates
    assert agg.count == counts[late_minute] + 1
    baseline = counts[late_minute - kept:late_minute]  # the pruned minutes are unknown, not 0 events
    expected = None
    if kept >= 3:
        expected = pytest.approx((agg.count - statistics.fmean(baseline)) / statistics.stdev(baseline))
    assert agg.volume_z == expected


def test_a_late_event_in_a_steady_stream_raises_no_volume_z():
    # Regression: the pruned minutes counted as 0 events, and one late document scored volume_z 2.39.
    store, offset = _minutes([5] * 50)
    [agg] = apply_events(store, [ev(offset, 30.5)], {"1m": 60}, 24, 3, NOW).aggregates
    assert agg.count == 6 and agg.volume_z is None  # a flat baseline: no spread to measure against


def test_state_round_trip_keeps_everything():
    tw = TickerWindows("AAPL", {"1m": 60, "15m": 900})
    for i in range(7):
        tw.add(ev(i, i * 0.7, score=i / 10, partition=i % 2))
    import orjson

    state = orjson.loads(orjson.dumps(tw.to_state()))  # what the Faust table's changelog stores
    back = TickerWindows.from_state("AAPL", {"1m": 60, "15m": 900}, state)
    assert back.to_state() == tw.to_state()
    assert back.add(ev(5, 0.1, partition=1)) is None


def test_a_batch_spanning_many_windows_keeps_each_baseline_whole():
    events = [ev(i, minute) for i, minute in enumerate([0, 1, 1, 2, 3, 3, 3, 4, 5, 6])]
    one_by_one: dict = {}
    expected = {}
    for e in events:  # one event per batch: nothing is pruned before its window is reported
        update = apply_events(one_by_one, [e], {"1m": 60}, baseline=3, min_baseline=3, now=NOW)
        one_by_one.update(update.states)
        for agg in update.aggregates:
            expected[agg.window_start] = agg
    aggs = apply_events({}, events, {"1m": 60}, baseline=3, min_baseline=3, now=NOW).aggregates
    assert {a.window_start: a for a in aggs} == expected
    assert any(a.volume_z is not None for a in aggs)


def test_apply_events_gives_one_state_per_ticker_and_the_changed_windows():
    store: dict = {}
    events = [ev(0, 0.1), ev(1, 0.2, ticker="MSFT"), ev(2, 0.3)]
    update = apply_events(store, events, {"1m": 60}, baseline=24, min_baseline=3, now=NOW)
    assert store == {}  # nothing written: the caller stores once the aggregates are out
    assert set(update.states) == {"AAPL", "MSFT"} and update.late == 0
    assert sorted((a.ticker, a.count) for a in update.aggregates) == [("AAPL", 2), ("MSFT", 1)]
    retried = apply_events(store, events, {"1m": 60}, baseline=24, min_baseline=3, now=NOW)
    assert retried == update  # a failed publication is retried with the very same aggregates
    store.update(update.states)
    again = apply_events(store, events, {"1m": 60}, baseline=24, min_baseline=3, now=NOW)
    assert again.aggregates == [] and again.states == {}  # a full replay changes nothing


@given(st.lists(st.tuples(st.floats(0, 200), st.floats(-1, 1), st.floats(0, 1),
                          st.sampled_from(["negative", "neutral", "positive"])), min_size=1, max_size=40))
def test_aggregates_always_valid(rows):
    tw = TickerWindows("AAPL", {"1m": 60, "15m": 900}, baseline=3)
    for i, (minute, score, conf, label) in enumerate(rows):
        tw.add(ev(i, minute, label, score, conf))
    for name, series in tw.series.items():
        for start in series.windows:
            agg = tw.aggregate(name, start, T0)  # validates ranges and shapes
            assert agg.count == sum(agg.counts.values())


def test_a_publication_that_fails_half_way_is_retried_with_the_same_aggregates():
    """Regression: the state used to be written before publishing, so the retry of a batch whose
    aggregates could not be sent (broker away) found its events counted and published nothing."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from finsent.settings import Settings
    from stream.aggregator import WindowAggregator
    from stream.metrics import WorkerMetrics

    class Sink:  # stands in for Elasticsearch: this test is about the order of the steps
        def __init__(self):
            self.indexed: dict[str, dict] = {}

        async def index_versioned(self, index, items):
            self.indexed |= {item.id: item.doc for item in items}
            return [], []

    sent: list = []
    broker_up = False

    async def send_aggregate(agg):
        if not broker_up:
            raise ConnectionError("broker away")
        sent.append(agg)
        return asyncio.sleep(0)

    sink = Sink()
    aggregator = WindowAggregator(Settings(windows="1m"), sink, WorkerMetrics(CollectorRegistry()),
                                  send_aggregate=send_aggregate, clock=lambda: T0)
    store: dict = {}
    events = [ev(0, 0.1), ev(1, 0.2), ev(2, 0.3, ticker="MSFT")]
    with pytest.raises(ConnectionError):
        asyncio.run(aggregator.process(store, events))
    assert store == {}
    broker_up = True
    published = asyncio.run(aggregator.process(store, events))
    assert sorted((a.ticker, a.count) for a in published) == [("AAPL", 2), ("MSFT", 1)]
    assert sorted((a.ticker, a.count) for a in sent) == [("AAPL", 2), ("MSFT", 1)]
    assert set(store) == {"AAPL", "MSFT"}
    assert asyncio.run(aggregator.process(store, events)) == []  # and a replay after success counts nothing


def test_an_event_at_the_end_of_the_calendar_is_refused_not_raised():
    last_day = WindowEvent("AAPL", "d1", datetime(9999, 12, 31, 12, tzinfo=UTC), "positive", 0.5, 0.9, 0, 1)
    update = apply_events({}, [last_day], SIZES, 24, 3, NOW)
    assert update.refused == {"future": 1} and update.aggregates == [] and update.states == {}
    # The windows themselves never raise: the day's window would end in year 10000.
    tw = TickerWindows("AAPL", SIZES)
    assert [name for name, _ in tw.add(last_day)] == ["1m", "15m", "1h"]
    for name, series in tw.series.items():
        for start in series.windows:
            assert tw.aggregate(name, start, NOW).window_end.year == 9999


def test_an_event_whose_window_starts_before_the_calendar_is_refused():
    first_week = WindowEvent("AAPL", "d1", datetime(1, 1, 1, 0, 0, 30, tzinfo=UTC), "positive", 0.5, 0.9, 0, 1)
    assert refusal(first_week, {"7d": 7 * 86400}, NOW, timedelta(minutes=5)) == "out_of_range"
    assert apply_events({}, [first_week], {"7d": 7 * 86400}, 24, 3, NOW).refused == {"out_of_range": 1}
    assert refusal(first_week, SIZES, NOW, timedelta(minutes=5)) is None  # year 1's first day is a day


def test_one_event_dated_years_ahead_leaves_the_ticker_s_windows_alone():
    store: dict = {}
    for batch in ([ev(1, 0)], [WindowEvent("AAPL", "d2", datetime(2099, 1, 1, tzinfo=UTC), "positive", 0.5, 0.9,
                                           0, 2)], [ev(3, 0.1), ev(4, 1)]):
        update = apply_events(store, batch, SIZES, 24, 3, T0)
        store.update(update.states)
    assert update.late == 0 and update.refused == {}
    assert {(a.window, a.count) for a in update.aggregates} == {("1m", 2), ("1m", 1), ("15m", 3), ("1h", 3),
                                                                ("1d", 3)}
    assert all(int(start) <= T0.timestamp() + 60 for start in store["AAPL"]["series"]["1m"]["w"])


def test_events_a_little_ahead_are_counted_further_ahead_refused():
    tolerance = timedelta(minutes=5)
    update = apply_events({}, [ev(1, 4), ev(2, 6)], {"1m": 60}, 24, 3, T0, future_tolerance=tolerance)
    assert update.refused == {"future": 1} and [a.count for a in update.aggregates] == [1]


def test_windows_a_future_event_left_in_older_state_are_forgotten():
    old = TickerWindows("AAPL", SIZES)  # state written before such events were refused
    old.add(ev(1, 0))
    old.add(WindowEvent("AAPL", "d2", datetime(2099, 1, 1, tzinfo=UTC), "positive", 0.5, 0.9, 0, 2))
    update = apply_events({"AAPL": old.to_state()}, [ev(3, 0.2), ev(4, 1)], SIZES, 24, 3, T0)
    assert update.late == 0 and sorted(a.count for a in update.aggregates if a.window == "1h") == [3]
    assert max(int(s) for s in update.states["AAPL"]["series"]["1d"]["w"]) < T0.timestamp()


def test_the_worker_counts_refused_events_by_reason():
    import asyncio

    from prometheus_client import CollectorRegistry

    from finsent.settings import Settings
    from stream.aggregator import WindowAggregator
    from stream.metrics import WorkerMetrics

    async def unused(*args):
        raise AssertionError("nothing to publish")

    registry = CollectorRegistry()
    aggregator = WindowAggregator(Settings(), None, WorkerMetrics(registry), send_aggregate=unused, clock=lambda: T0)
    future = WindowEvent("AAPL", "d1", datetime(2099, 1, 1, tzinfo=UTC), "positive", 0.5, 0.9, 0, 1)
    assert asyncio.run(aggregator.process({}, [future])) == []
    assert registry.get_sample_value("finsent_stream_refused_window_events_total", {"reason": "future"}) == 1.0


@pytest.mark.parametrize("change, words", [({"score": "nan"}, "out of range"), ({"confidence": 2}, "out of range"),
                                           ({"at": "9999-12-31T23:59:59-01:00"}, "out of range in UTC")])
def test_a_window_event_that_would_poison_the_windows_is_refused_with_a_value_error(change, words):
    good = ev(1, 0).to_json()
    assert WindowEvent.from_json(good) == ev(1, 0)
    with pytest.raises(ValueError, match=words):
        WindowEvent.from_json(good | change)


def test_the_version_grows_with_each_event_counted_also_when_a_window_is_counted_again_from_nothing():
    windows = TickerWindows("AAPL", {"1m": 60}, baseline=2)
    versions = [windows.version]
    for event in (ev(5, 0.1), ev(0, 0.2, partition=1), ev(6, 0.3), ev(9, 30), ev(10, 30.2)):
        windows.add(event)
        versions.append(windows.version)
    assert versions == sorted(set(versions))  # strictly growing
    windows.prune()
    windows.forget_after((T0 + timedelta(minutes=1)).timestamp())  # minute 30 goes, with its count of 2
    windows.add(ev(11, 30.5))
    assert windows.aggregate("1m", windows.series["1m"].start_of(T0 + timedelta(minutes=30)), NOW).count == 1
    assert windows.version > versions[-1]  # its count fell; its version did not: the new aggregate is written
