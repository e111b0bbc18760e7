"""Pure rule evaluation with an injected clock: thresholds, filters, dedup, cooldown, bursts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.engine import RuleEngine
from alerts.ticker_state import BURST_LATENESS
from alerts.payload import idempotency_key
from alerts.rules import parse_rules
from finsent.schemas import Aggregate, ControlMessage, ScoredDocument, Sentiment

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


def rules(*items, **extra):
    return parse_rules({"rules": list(items), **extra})


def agg(ticker="AAPL", window="15m", start=T0, count=30, mean=-0.5, z=None, vz=None):
    length = {"15m": 900, "1h": 3600, "1m": 60}[window]
    return Aggregate(ticker=ticker, window=window, window_start=start, window_end=start + timedelta(seconds=length),
                     count=count, counts={"negative": count, "neutral": 0, "positive": 0}, mean_score=mean,
                     weighted_mean_score=mean, sentiment_z=z, volume_z=vz, updated_at=start)


def doc(i, ticker="AAPL", score=-0.9, label="negative", conf=0.95, at=T0):
    probs = {"negative": 0.9, "neutral": 0.05, "positive": 0.05} if label == "negative" else \
            {"negative": 0.05, "neutral": 0.05, "positive": 0.9}
    return ScoredDocument(id=f"d{i}", source="test", title=f"title {i}", url=f"https://news.example/{i}",
                          text="x", tickers=[ticker], published_at=at, ingested_at=at, scored_at=at,
                          sentiment=Sentiment(label=label, score=score, probabilities=probs, confidence=conf),
                          model_version="v1")


_LENGTH = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "1m": timedelta(minutes=1)}


def warm(engine, *series, n=5):
    """Show the engine ``n`` quiet windows before T0 of each (ticker, window): a rule's min_history
    (default 5) counts the windows the engine saw, whatever z-score the stream sends."""
    for ticker, window in series or [("AAPL", "15m")]:
        for k in range(n, 0, -1):
            assert engine.on_aggregate(agg(ticker, window, start=T0 - k * _LENGTH[window], count=1)) == []
    return engine


SHIFT = {"name": "shift", "kind": "sentiment_shift", "threshold": 3, "min_count": 10, "cooldown": "30m"}


def test_shift_fires_once_with_payload():
    clock = Clock()
    engine = warm(RuleEngine(rules(SHIFT), clock=clock, dashboard_template="https://kb/{ticker}/{window}?from={from}"))
    for i in range(3):
        engine.on_scored(doc(i, score=-0.2 - i * 0.3, at=T0 + timedelta(minutes=i)))
    engine.on_scored(doc(9, ticker="MSFT", at=T0))
    [alert] = engine.on_aggregate(agg(z=-4.2))
    assert alert.kind == "sentiment_shift" and alert.rule == "shift" and alert.ticker == "AAPL"
    assert alert.window == "15m" and alert.window_start == T0 and alert.threshold == 3
    assert alert.value == -0.5 and alert.created_at == T0 and alert.status == "pending"
    assert alert.idempotency_key == idempotency_key("shift", "AAPL", "15m", T0)
    assert [d.id for d in alert.documents] == ["d2", "d1", "d0"]  # most negative first, MSFT excluded
    assert alert.dashboard_url == f"https://kb/AAPL/15m?from={T0.isoformat()}"
    assert "fell" in alert.message and "z=-4.20" in alert.message
    # The same window again (an updated aggregate): deduplicated, even after the cooldown.
    clock.advance(hours=2)
    assert engine.on_aggregate(agg(z=-5.0, count=40)) == []
    assert engine.stats.deduplicated == 1


def test_shift_thresholds_direction_and_min_count():
    engine = warm(RuleEngine(rules({**SHIFT, "direction": "up"}), clock=Clock()))
    assert engine.on_aggregate(agg(z=-9)) == []  # wrong direction
    assert engine.on_aggregate(agg(start=T0 + timedelta(minutes=15), z=2.99)) == []  # below threshold
    assert engine.on_aggregate(agg(start=T0 + timedelta(minutes=30), z=8, count=9)) == []  # too few documents
    [alert] = engine.on_aggregate(agg(start=T0 + timedelta(minutes=45), z=3.0, mean=0.6))
    assert "rose" in alert.message


def test_cooldown_per_rule_and_ticker_in_event_time():
    # The engine's clock plays no part: a window's time is when the stream reported it (agg's updated_at).
    engine = warm(RuleEngine(rules(SHIFT), clock=Clock(T0 + timedelta(hours=1))), ("AAPL", "15m"), ("MSFT", "15m"))
    assert len(engine.on_aggregate(agg(z=-4))) == 1
    nxt = T0 + timedelta(minutes=15)
    assert engine.on_aggregate(agg(start=nxt, z=-6)) == []  # 15 minutes of news later: within the cooldown
    assert engine.stats.cooled_down == 1
    assert len(engine.on_aggregate(agg(ticker="MSFT", start=nxt, z=-6))) == 1  # other ticker: own cooldown
    assert len(engine.on_aggregate(agg(start=T0 + timedelta(minutes=30), z=-6))) == 1  # 30 minutes later


def test_filters_on_tickers_and_windows():
    engine = warm(RuleEngine(rules({**SHIFT, "tickers": ["TSLA"], "windows": ["1h"]}), clock=Clock()),
                  ("TSLA", "15m"), ("AAPL", "1h"), ("TSLA", "1h"))
    assert engine.on_aggregate(agg(ticker="TSLA", window="15m", z=9)) == []
    assert engine.on_aggregate(agg(ticker="AAPL", window="1h", z=9)) == []
    assert len(engine.on_aggregate(agg(ticker="TSLA", window="1h", z=9))) == 1


def test_shift_from_own_trailing_baseline_when_z_missing():
    engine = RuleEngine(rules({**SHIFT, "min_history": 5}), clock=Clock())
    for i, mean in enumerate([0.10, 0.12, 0.08, 0.11, 0.09]):
        assert engine.on_aggregate(agg(start=T0 + timedelta(minutes=15 * i), mean=mean)) == []
    [alert] = engine.on_aggregate(agg(start=T0 + timedelta(minutes=75), mean=-0.4))
    assert alert.baseline == pytest.approx(0.10)
    assert alert.value == -0.4


def test_trailing_baseline_uses_the_final_value_of_each_window():
    engine = RuleEngine(rules({**SHIFT, "min_history": 2, "min_count": 1}), clock=Clock())
    engine.on_aggregate(agg(start=T0, mean=0.9, count=1))
    engine.on_aggregate(agg(start=T0, mean=0.1, count=20))  # the same window, updated
    engine.on_aggregate(agg(start=T0 + timedelta(minutes=15), mean=0.2, count=20))
    [alert] = engine.on_aggregate(agg(start=T0 + timedelta(minutes=30), mean=-0.9, count=20))
    assert alert.baseline == pytest.approx(0.15)


def test_volume_spike():
    engine = warm(RuleEngine(rules({"name": "vol", "kind": "volume_spike", "threshold": 4, "min_count": 20}),
                             clock=Clock()))
    assert engine.on_aggregate(agg(count=100, vz=3.9)) == []
    assert engine.on_aggregate(agg(start=T0 + timedelta(minutes=15), count=19, vz=10)) == []
    [alert] = engine.on_aggregate(agg(start=T0 + timedelta(minutes=30), count=100, vz=4.5))
    assert alert.kind == "volume_spike" and alert.value == 100


BURST = {"name": "burst", "kind": "negative_burst", "count": 3, "min_confidence": 0.8, "within": "10m",
         "cooldown": "1h"}


def test_negative_burst_counts_confident_negatives_within_span():
    engine = RuleEngine(rules(BURST), clock=Clock())
    assert engine.on_scored(doc(1, at=T0)) == []
    assert engine.on_scored(doc(2, conf=0.5, at=T0 + timedelta(minutes=1))) == []  # not confident
    assert engine.on_scored(doc(3, label="positive", score=0.8, at=T0 + timedelta(minutes=2))) == []
    assert engine.on_scored(doc(1, at=T0)) == []  # redelivered: counts once
    assert engine.on_scored(doc(4, at=T0 + timedelta(minutes=11))) == []  # d1 fell out of the span
    assert engine.on_scored(doc(5, score=-0.99, at=T0 + timedelta(minutes=12))) == []  # d4, d5: two
    [alert] = engine.on_scored(doc(6, score=-0.8, at=T0 + timedelta(minutes=13)))
    assert [d.id for d in alert.documents] == ["d5", "d4", "d6"]  # most negative first
    assert engine.on_scored(doc(7, at=T0 + timedelta(minutes=14))) == []  # the burst was consumed


def test_negative_burst_fires_with_documents_keyed_by_its_first_document():
    engine = RuleEngine(rules(BURST), clock=Clock())
    alerts = []
    for i in range(3):
        alerts += engine.on_scored(doc(i, score=-0.7 - 0.1 * i, at=T0 + timedelta(minutes=3 + i)))
    [alert] = alerts
    assert alert.kind == "negative_burst" and alert.ticker == "AAPL" and alert.window == "10m"
    assert alert.window_start == T0 + timedelta(minutes=3)  # the burst's first document: the same on a replay
    assert alert.idempotency_key == idempotency_key("burst", "AAPL", "10m", T0 + timedelta(minutes=3))
    assert [d.id for d in alert.documents] == ["d2", "d1", "d0"]
    assert alert.value == 3 and alert.threshold == 3


def test_model_and_drift_events():
    engine = RuleEngine(rules({"name": "models", "kind": "model", "actions": ["rollback"]},
                              {"name": "drift", "kind": "drift", "monitors": ["input"]}), clock=Clock())
    promote = ControlMessage(action="promote", model_version="v2", issued_at=T0)
    assert engine.on_control(promote) == []
    [alert] = engine.on_control(ControlMessage(action="rollback", model_version="v1", reason="F1 fell",
                                               issued_at=T0))
    assert alert.kind == "model" and alert.ticker is None and "v1" in alert.message and "F1 fell" in alert.message
    other = ControlMessage(action="drift", model_version="v1", details={"monitor": "adwin"}, issued_at=T0)
    assert engine.on_control(other) == []
    [drift] = engine.on_control(ControlMessage(action="drift", model_version="v1", issued_at=T0,
                                               details={"monitor": "input", "statistic": 0.4, "threshold": 0.2}))
    assert drift.kind == "drift" and drift.value == 0.4 and drift.threshold == 0.2 and "input" in drift.message


def test_drift_event_as_retrain_publishes_it():
    engine = RuleEngine(rules({"name": "drift", "kind": "drift", "monitors": ["performance"]}), clock=Clock())
    psi_only = ControlMessage(action="drift", model_version="v3", reason="drift: psi", issued_at=T0,
                              details={"fresh_labels": 12, "psi_statistic": 0.3, "psi_threshold": 0.2})
    assert engine.on_control(psi_only) == []
    [alert] = engine.on_control(ControlMessage(
        action="drift", model_version="v3", reason="drift: performance, psi", issued_at=T0 + timedelta(hours=1),
        details={"psi_statistic": 0.3, "psi_threshold": 0.2, "performance_statistic": 0.61,
                 "performance_threshold": 0.7}))
    assert alert.value == 0.61 and alert.threshold == 0.7
    assert "by performance" in alert.message and "psi_statistic=0.3" in alert.message


def test_restore_rearms_cooldown_and_dedup():
    clock = Clock(T0 + timedelta(minutes=10))
    engine = warm(RuleEngine(rules(SHIFT), clock=clock))
    key = idempotency_key("shift", "AAPL", "15m", T0)
    engine.restore([("shift", "AAPL", T0), ("gone", "AAPL", T0)], [key])
    assert engine.on_aggregate(agg(z=-9)) == []  # already raised before the restart
    assert engine.stats.deduplicated == 1
    # The cooldown runs in event time from the alert's creation: a window reported within 30 minutes of it
    # stays quiet, the next one raises, whatever the engine's clock says.
    assert engine.on_aggregate(agg(start=T0 + timedelta(minutes=15), z=-9)) == []
    assert engine.stats.cooled_down == 1
    assert len(engine.on_aggregate(agg(start=T0 + timedelta(minutes=30), z=-9))) == 1


def test_disabled_rule_is_skipped():
    engine = warm(RuleEngine(rules({**SHIFT, "enabled": False}), clock=Clock()))
    assert engine.on_aggregate(agg(z=-9)) == []


@pytest.mark.parametrize("order", [[2, 1, 0], [0, 2, 1], [1, 2, 0]])
def test_negative_burst_fires_once_whatever_the_arrival_order(order):
    # Feeds list newest first, and scored documents come from several partitions.
    engine = RuleEngine(rules({**BURST, "cooldown": "0s"}), clock=Clock())
    alerts = []
    for i in order:
        alerts += engine.on_scored(doc(i, score=-0.7 - 0.1 * i, at=T0 + timedelta(minutes=i)))
    [alert] = alerts
    assert [d.id for d in alert.documents] == ["d2", "d1", "d0"] and alert.value == 3
    assert alert.window_start == T0 and str(T0 + timedelta(minutes=2)) in alert.message.replace("T", " ")
    # The burst's documents are spent, even without a cooldown: a late fourth one raises nothing.
    assert engine.on_scored(doc(3, at=T0 - timedelta(minutes=1))) == []


def test_negative_burst_counts_only_documents_within_the_span_of_each_other():
    engine = RuleEngine(rules({**BURST, "cooldown": "0s"}), clock=Clock())
    for i in (20, 10, 0):  # newest first, 10 minutes apart: no three within 10 minutes
        assert engine.on_scored(doc(i, at=T0 + timedelta(minutes=i))) == []
    [alert] = engine.on_scored(doc(5, at=T0 + timedelta(minutes=5)))  # 0, 5 and 10 lie within 10 minutes
    assert {d.id for d in alert.documents} == {"d0", "d5", "d10"}
    assert engine.on_scored(doc(15, at=T0 + timedelta(minutes=15))) == []  # 10 is spent: 15 and 20 are two
    # The state is bounded: a document more than BURST_LATENESS behind the newest comes too late to count.
    engine = RuleEngine(rules(BURST), clock=Clock())
    engine.on_scored(doc(1, at=T0 + BURST_LATENESS + timedelta(hours=1)))
    for i in (2, 3, 4):
        assert engine.on_scored(doc(i, at=T0 + timedelta(minutes=i))) == []


def test_min_history_holds_when_the_stream_sends_a_z_score():
    # The stream's z can rest on FINSENT_WINDOW_MIN_BASELINE (3) windows; the rule asks for 20.
    engine = RuleEngine(rules({**SHIFT, "min_history": 20},
                              {"name": "vol", "kind": "volume_spike", "threshold": 4, "min_history": 20}),
                        clock=Clock())
    assert engine.on_aggregate(agg(z=-4.0, vz=9.0)) == []
    for k in range(1, 20):  # window k closes window k - 1
        assert engine.on_aggregate(agg(start=T0 + k * timedelta(minutes=15), count=1)) == []
    assert engine.on_aggregate(agg(start=T0 + 19 * timedelta(minutes=15), z=-4.0, vz=9.0)) == []  # 19 closed
    later = engine.on_aggregate(agg(start=T0 + 20 * timedelta(minutes=15), z=-4.0, vz=9.0))
    assert {a.kind for a in later} == {"sentiment_shift", "volume_spike"}
    # A rule asking for no more than the stream's minimum baseline trusts its z at once.
    for min_history, raised in ((3, 1), (4, 0)):
        engine = RuleEngine(rules({**SHIFT, "min_history": min_history}), clock=Clock(), stream_min_baseline=3)
        assert len(engine.on_aggregate(agg(z=-4.0))) == raised


def test_state_per_ticker_is_bounded_by_max_tickers():
    clock = Clock()
    engine = RuleEngine(rules(SHIFT, BURST, {"name": "vol", "kind": "volume_spike", "threshold": 4}), clock=clock,
                        max_tickers=3)
    raised = 0
    for n in range(50):
        ticker = f"T{n}"
        warm(engine, (ticker, "15m"), n=5)
        raised += len(engine.on_aggregate(agg(ticker, z=-5.0)))  # series and cooldowns
        for i in range(3):  # a burst, spent
            raised += len(engine.on_scored(doc(f"{n}-{i}", ticker=ticker, at=T0 + timedelta(minutes=i))))
        engine.on_scored(doc(f"{n}-x", ticker=ticker, at=T0 + timedelta(minutes=5)))  # a burst begun
        assert engine.tracked_tickers <= 3
    assert raised == 100  # every ticker still raises its shift and its burst


def test_a_ticker_evicted_from_memory_comes_back_within_its_cooldown():
    clock = Clock()
    engine = RuleEngine(rules(SHIFT), clock=clock, max_tickers=2, stream_min_baseline=5)
    for k in range(2):  # two windows, within the 30 m cooldown of each other
        clock.now = T0 + (k + 1) * timedelta(minutes=15)
        for ticker in ("AAPL", "MSFT", "NVDA"):  # each one evicts the least recently seen
            raised = engine.on_aggregate(agg(ticker, start=T0 + k * timedelta(minutes=15), z=-5.0))
            assert len(raised) == (k == 0), (ticker, k)
    assert engine.tracked_tickers == 2 and engine.stats.cooled_down == 3
    for n in range(10):  # a crowd of new tickers: what is kept of evicted ones stays bounded too
        engine.on_aggregate(agg(f"T{n}", start=T0 + timedelta(minutes=15), z=-5.0))
    assert len(engine._evicted_fired) <= 2


def test_a_restarted_engine_warmed_with_the_past_windows_judges_the_next_one_at_once():
    past = [agg(start=T0 - k * _LENGTH["15m"], count=1, z=-9.0) for k in range(6, 0, -1)]
    cold = RuleEngine(rules({**SHIFT, "min_history": 5}), clock=Clock())
    assert cold.on_aggregate(agg(z=-4.2)) == []  # a restart without the history: 0 windows seen
    warmed = RuleEngine(rules({**SHIFT, "min_history": 5}), clock=Clock())
    assert warmed.warm(past) == 6 and warmed.tracked_tickers == 1  # no rule is evaluated on them (z -9)
    [alert] = warmed.on_aggregate(agg(z=-4.2))
    assert alert.ticker == "AAPL" and alert.window_start == T0
    short = RuleEngine(rules({**SHIFT, "min_history": 5}), clock=Clock())
    short.warm(past[-4:])  # four earlier windows: three closed, the fourth closes with T0's
    assert short.on_aggregate(agg(z=-4.2)) == []


def test_the_history_query_asks_each_window_size_for_its_own_span():
    from alerts.ticker_state import HISTORY_WINDOWS
    from alerts.window_history import history_query

    clauses = history_query("1m,1h", T0)["bool"]["should"]
    spans = {c["bool"]["filter"][0]["term"]["window"]: c["bool"]["filter"][1]["range"]["window_start"]
             for c in clauses}
    assert spans == {
        "1m": {"gte": (T0 - (HISTORY_WINDOWS + 1) * timedelta(minutes=1)).isoformat(), "lte": T0.isoformat()},
        "1h": {"gte": (T0 - (HISTORY_WINDOWS + 1) * timedelta(hours=1)).isoformat(), "lte": T0.isoformat()},
    }


def test_old_news_fills_the_baseline_but_raises_no_alert():
    # A feed's backlog, ingest catching up, a backfill or a DLQ replay: windows that ended more than
    # max_age (6 h by default) ago, and bursts whose newest document is that old, page nobody.
    clock = Clock(T0 + timedelta(days=3))
    shift = warm(RuleEngine(rules(SHIFT), clock=clock))
    assert shift.on_aggregate(agg(z=-0.5)) == [] and shift.stats.stale == 0  # no hit: nothing suppressed
    assert shift.on_aggregate(agg(z=-5.0)) == [] and shift.stats.stale == 1
    clock.now = T0 + timedelta(minutes=15) + timedelta(hours=6)  # the window ended exactly max_age ago
    [alert] = shift.on_aggregate(agg(z=-5.0, count=31))
    assert alert.window_start == T0
    spike = warm(RuleEngine(rules({"name": "spike", "kind": "volume_spike", "threshold": 3, "min_count": 10}),
                            clock=Clock(T0 + timedelta(days=3))))
    assert spike.on_aggregate(agg(count=500, vz=9.0)) == [] and spike.stats.stale == 1

    burst = RuleEngine(rules(BURST), clock=Clock(T0 + timedelta(days=3)))
    assert [burst.on_scored(doc(i, at=T0 + timedelta(minutes=i))) for i in range(3)] == [[], [], []]
    assert burst.stats.stale == 1
    # A fresh negative that joins them makes the burst news again, and it holds the old ones.
    burst.clock = Clock(T0 + timedelta(minutes=5))
    [alert] = burst.on_scored(doc(3, at=T0 + timedelta(minutes=4)))
    assert sorted(d.id for d in alert.documents) == ["d0", "d1", "d2", "d3"]


def test_max_age_zero_alerts_on_news_of_any_age():
    engine = warm(RuleEngine(rules({**SHIFT, "max_age": 0}), clock=Clock(T0 + timedelta(days=300))))
    [alert] = engine.on_aggregate(agg(z=-5.0))
    assert alert.ticker == "AAPL" and engine.stats.stale == 0
    with pytest.raises(ValueError, match="max_age"):
        rules({**SHIFT, "max_age": "-1h"})


def test_catching_up_on_a_backlog_leaves_the_live_window_its_alert():
    # The engine was down two hours (within max_age); it reads the backlog oldest first.
    engine = warm(RuleEngine(rules(SHIFT), clock=Clock(T0 + timedelta(hours=2))))
    [old] = engine.on_aggregate(agg(z=-4.5))
    # The backlog's next window lies within the cooldown of the one that raised: a replayed hour pages once.
    assert engine.on_aggregate(agg(start=T0 + timedelta(minutes=15), z=-4.5)) == []
    assert engine.stats.cooled_down == 1
    [live] = engine.on_aggregate(agg(start=T0 + timedelta(minutes=115), mean=0.7, z=5.0))
    assert (old.window_start, live.window_start) == (T0, T0 + timedelta(minutes=115))
    # A window read late, whose news lies within the cooldown of one already raised, is a repeat too.
    assert engine.on_aggregate(agg(start=T0 + timedelta(minutes=100), z=-4.5)) == []
    assert engine.stats.cooled_down == 2


def test_a_window_reported_late_takes_its_end_as_its_time():
    # A backfill: the stream reports old windows long after they closed; they are as old as their end.
    engine = warm(RuleEngine(rules({**SHIFT, "max_age": 0}), clock=Clock(T0 + timedelta(days=2))))
    late = lambda start: agg(start=start, z=-4.0).model_copy(update={"updated_at": T0 + timedelta(days=2)})  # noqa
    assert len(engine.on_aggregate(late(T0))) == 1
    assert engine.on_aggregate(late(T0 + timedelta(minutes=15))) == []  # ends 15 minutes after the first
    assert len(engine.on_aggregate(late(T0 + timedelta(minutes=30)))) == 1


BURST5 = {"name": "burst", "kind": "negative_burst", "count": 5, "within": "10m", "cooldown": "1h"}


def test_a_burst_during_the_cooldown_is_kept_and_raised_once_the_cooldown_is_over():
    clock = Clock()
    engine = RuleEngine(rules(BURST5), clock=clock)

    def negative(i, minute):
        clock.now = T0 + timedelta(minutes=minute)
        return engine.on_scored(doc(i, at=clock.now))

    assert len([a for i, m in enumerate(range(5)) for a in negative(i, m)]) == 1
    assert [a for i, m in enumerate(range(56, 62), 10) for a in negative(i, m)] == []  # within the hour
    assert engine.stats.cooled_down == 1  # one burst held back, however many documents it grew by
    [alert] = negative(20, 65)  # 61 minutes after the first burst's newest document
    assert alert.value == 7 and alert.window_start == T0 + timedelta(minutes=56)
    assert len(alert.documents) == 5 and engine._tickers["AAPL"].bursts["burst"].times == []


def test_two_bursts_within_one_span_length_raise_two_alerts_and_a_replay_none():
    clock = Clock()
    engine = RuleEngine(rules({**BURST5, "within": "1h", "cooldown": "15m"}), clock=clock)
    raised = []
    for i, minute in enumerate([1, 2, 3, 4, 5, 31, 32, 33, 34, 35]):
        clock.now = T0 + timedelta(minutes=minute)
        raised += engine.on_scored(doc(i, at=clock.now))
    assert [a.window_start for a in raised] == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=31)]
    assert engine.stats.deduplicated == 0
    # The same documents again (input replayed after a crash): the same keys, so nothing new, and
    # the replayed burst is spent rather than left to swallow the next negatives.
    replay = RuleEngine(rules({**BURST5, "within": "1h", "cooldown": "15m"}), clock=clock)
    replay.restore([], [a.idempotency_key for a in raised])
    again = [a for i, m in enumerate([1, 2, 3, 4, 5]) for a in replay.on_scored(doc(i, at=T0 + timedelta(minutes=m)))]
    assert again == [] and replay.stats.deduplicated == 1
    assert replay._tickers["AAPL"].bursts["burst"].times == []


def test_model_and_drift_messages_read_after_downtime_are_stale():
    engine = RuleEngine(rules({"name": "models", "kind": "model"}, {"name": "drift", "kind": "drift"}),
                        clock=Clock(T0 + timedelta(days=3)))
    old = [ControlMessage(action="promote", model_version="v2", issued_at=T0),
           ControlMessage(action="drift", model_version="v2", details={"monitor": "psi"}, issued_at=T0)]
    assert [a for msg in old for a in engine.on_control(msg)] == [] and engine.stats.stale == 2
    fresh = ControlMessage(action="rollback", model_version="v1", issued_at=T0 + timedelta(days=3, hours=-5))
    assert [a.kind for a in engine.on_control(fresh)] == ["model"]


def test_top_documents_hold_no_text_and_are_bounded_in_count_and_age():
    clock = Clock(T0 + timedelta(minutes=15))
    engine = warm(RuleEngine(rules({**SHIFT, "max_age": "1h"}), clock=clock, docs_per_ticker=3))
    for i in range(5):
        engine.on_scored(doc(i, score=-0.1 * i, at=T0 + timedelta(minutes=i)))
    engine.on_scored(doc(4, score=-0.4, at=T0 + timedelta(minutes=4)))  # redelivered: kept once
    kept = engine._tickers["AAPL"].docs
    assert [d.id for d in kept.docs] == ["d2", "d3", "d4"] and kept.ids == {"d2", "d3", "d4"}
    assert not any(hasattr(d, "text") for d in kept.docs)
    [alert] = engine.on_aggregate(agg(z=-4.0))
    assert [d.id for d in alert.documents] == ["d4", "d3", "d2"] and alert.documents[0].title == "title 4"
    # Past the longest window seen (15m) plus max_age (1h), no alert can show them.
    clock.now = T0 + timedelta(hours=1, minutes=20)
    engine.on_scored(doc(9, ticker="AAPL", at=clock.now))
    assert kept.ids == {"d9"}
    # No rule shows top documents: none are kept.
    bare = RuleEngine(rules(BURST), clock=Clock())
    bare.on_scored(doc(1, label="positive", score=0.9))
    assert bare.tracked_tickers == 0


def test_held_back_hits_are_counted_once_per_alert_and_reason():
    engine = RuleEngine(rules(SHIFT), clock=Clock(), stream_min_baseline=3)
    for k in range(4):  # min_history 5, and the stream's z rests on 3 windows: held back, and now counted
        for count in (40, 41):  # each window updated
            assert engine.on_aggregate(agg(start=T0 + k * timedelta(minutes=15), count=count, z=-9.0)) == []
    assert engine.stats.suppressed() == {"dedup": 0, "history": 4, "stale": 0, "cooldown": 0}
    engine = warm(RuleEngine(rules(SHIFT), clock=Clock()))
    raised = [a for count in range(40, 100) for a in engine.on_aggregate(agg(count=count, z=-9.0))]
    assert len(raised) == 1 and engine.stats.suppressed()["dedup"] == 1  # 59 updates of a window that raised


def test_a_burst_under_way_at_a_restart_goes_on_with_the_negatives_read_back():
    clock = Clock(T0 + timedelta(minutes=3))
    before = [doc(i, at=T0 + timedelta(minutes=i)) for i in range(3)]
    restarted = RuleEngine(rules(BURST5), clock=clock)
    positive = doc(9, label="positive", score=0.9, at=T0)
    assert restarted.warm_bursts([*before, positive, before[0]]) == 3  # negatives only, each once
    assert restarted.stats.suppressed() == {"dedup": 0, "history": 0, "stale": 0, "cooldown": 0}
    assert restarted.on_scored(doc(3, at=T0 + timedelta(minutes=3))) == []
    [alert] = restarted.on_scored(doc(4, at=T0 + timedelta(minutes=4)))
    assert alert.value == 5 and alert.window_start == T0
    # Negatives no later than the rule's last alert for the ticker may have been its burst: left out.
    again = RuleEngine(rules(BURST5), clock=clock)
    again.restore([("burst", "AAPL", T0 + timedelta(minutes=4))])
    more = [doc(i, at=T0 + timedelta(minutes=i)) for i in range(5)] + [doc(5, at=T0 + timedelta(minutes=65))]
    assert again.warm_bursts(more) == 1
    assert again._tickers["AAPL"].bursts["burst"].times == [T0 + timedelta(minutes=65)]
