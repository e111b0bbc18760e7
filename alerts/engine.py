"""Pure rule evaluation: records in, :class:`~finsent.schemas.Alert` objects out. No I/O.

The engine keeps a little state per ticker (trailing window statistics, recent documents,
negative bursts, cooldowns) for at most ``max_tickers`` tickers, the least recently seen
going first, plus dedup keys, and takes its time from an injected clock, so every decision
is reproducible in a unit test. Durable dedup lives in the outbox (the idempotency key is its
primary key); the in-memory set only spares it the work.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from alerts.payload import dashboard_url, idempotency_key
from alerts.rules import (
    DriftRule,
    ModelRule,
    NegativeBurstRule,
    RulesFile,
    SentimentShiftRule,
    TickerRule,
    VolumeSpikeRule,
)
from finsent.durations import format_duration
from finsent.schemas import Aggregate, Alert, AlertDocument, ControlMessage, ScoredDocument

Clock = Callable[[], datetime]

# How far behind the newest negative of a (rule, ticker) an older one may arrive and still count
# towards a burst: feeds list newest first, and scored documents come from several partitions.
BURST_LATENESS = timedelta(hours=24)


def _system_clock() -> datetime:
    return datetime.now(UTC)


HISTORY_WINDOWS = 48  # closed windows each (ticker, window) series keeps for its baseline


@dataclass
class _WindowSeries:
    """Final values of past windows of one (ticker, window), plus the window now filling."""

    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_WINDOWS))
    closed: int = 0  # windows closed since the engine started (the history keeps the last 48)
    current_start: datetime | None = None
    current: tuple[float, int] | None = None

    def observe(self, agg: Aggregate) -> None:
        if self.current_start is None or agg.window_start > self.current_start:
            if self.current is not None:
                self.history.append(self.current)  # the previous window is closed
                self.closed += 1
            self.current_start = agg.window_start
            self.current = (agg.mean_score, agg.count)
        elif agg.window_start == self.current_start:
            self.current = (agg.mean_score, agg.count)
        # an update to an older window: too late to change the baseline

    def stats(self, index: int) -> tuple[float | None, float | None, int]:
        """(mean, standard deviation, n) of the closed windows' values (0: mean score, 1: count)."""
        values = [item[index] for item in self.history]
        if not values:
            return None, None, 0
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return mean, math.sqrt(var), len(values)


def _z(value: float, mean: float | None, std: float | None, n: int, min_n: int) -> float | None:
    if mean is None or std is None or n < min_n or std <= 1e-12:
        return None
    return (value - mean) / std


def _event_time(doc: ScoredDocument) -> datetime:
    return doc.published_at or doc.ingested_at


def densest_span(times: list[datetime], at: datetime, within: timedelta) -> tuple[int, int]:
    """``(i, j)``: the most times of the sorted ``times`` that lie within ``within`` of each other
    with ``at`` among them, as the slice ``times[i:j]`` (earliest such span on a tie)."""
    lo = bisect.bisect_left(times, at - within)
    hi = bisect.bisect_right(times, at + within)
    best, j = (lo, lo), lo
    for i in range(lo, hi):
        if times[i] > at:
            break  # a span starting after `at` does not hold it
        j = max(j, i)
        while j < hi and times[j] - times[i] <= within:
            j += 1
        if times[j - 1] >= at and j - i > best[1] - best[0]:
            best = (i, j)
    return best


@dataclass
class _Burst:
    """Confident negatives of one (rule, ticker), in event-time order whatever their arrival order."""

    times: list[datetime] = field(default_factory=list)
    docs: list[AlertDocument] = field(default_factory=list)  # in the order of `times`; no text to hold
    newest: datetime | None = None

    def add(self, doc: ScoredDocument) -> datetime | None:
        """Keep ``doc``; returns its event time, or None for a repeat or one too late to count."""
        at = _event_time(doc)
        if any(d.id == doc.id for d in self.docs[bisect.bisect_left(self.times, at):
                                                  bisect.bisect_right(self.times, at)]):
            return None  # redelivered: counts once
        if self.newest is not None and at < self.newest - BURST_LATENESS:
            return None
        index = bisect.bisect_right(self.times, at)
        self.times.insert(index, at)
        self.docs.insert(index, _as_alert_doc(doc))
        self.newest = max(self.newest or at, at)
        return at

    def prune(self, within: timedelta, keep: int) -> None:
        """Forget what no late arrival can join to a burst any more, and beyond ``keep`` the oldest."""
        cut = bisect.bisect_left(self.times, self.newest - within - BURST_LATENESS)
        cut = max(cut, len(self.times) - keep)
        if cut > 0:
            del self.times[:cut], self.docs[:cut]

    def take(self, i: int, j: int) -> list[AlertDocument]:
        """Remove and return a burst's documents: they raise no second alert."""
        taken = self.docs[i:j]
        del self.times[i:j], self.docs[i:j]
        return taken


@dataclass
class _TickerState:
    """Everything the engine remembers about one ticker; evicted as a whole."""

    docs: deque[ScoredDocument]
    series: dict[str, _WindowSeries] = field(default_factory=dict)  # by window
    bursts: dict[str, _Burst] = field(default_factory=dict)  # by rule name
    cooldown_until: dict[str, datetime] = field(default_factory=dict)  # by rule name


# finsent_alerts_suppressed_total's reasons, and the EngineStats field that counts each.
SUPPRESSED = {"dedup": "deduplicated", "cooldown": "cooled_down", "stale": "stale"}


@dataclass
class EngineStats:
    documents: int = 0
    deduplicated: int = 0
    cooled_down: int = 0
    stale: int = 0  # rule hits not raised: what they report is older than the rule's max_age

    def suppressed(self) -> dict[str, int]:
        """Rule hits held back so far, by the reason finsent_alerts_suppressed_total gives."""
        return {reason: getattr(self, field) for reason, field in SUPPRESSED.items()}


class RuleEngine:
    """Evaluates the enabled rules of a :class:`RulesFile` against aggregates, documents and control messages.

    ``stream_min_baseline`` is the stream's FINSENT_WINDOW_MIN_BASELINE: a z-score in an aggregate rests
    on at least that many earlier windows, which counts towards a rule's ``min_history``.
    """

    def __init__(self, rules: RulesFile, *, clock: Clock = _system_clock, dashboard_template: str | None = None,
                 docs_per_ticker: int = 500, max_tickers: int = 20_000, dedup_memory: int = 100_000,
                 stream_min_baseline: int = 0) -> None:
        self.rules = rules
        self.clock = clock
        self.stream_min_baseline = stream_min_baseline
        self.dashboard_template = rules.dashboard_url or dashboard_template
        self.stats = EngineStats()
        self._docs_per_ticker = docs_per_ticker
        self._max_tickers = max_tickers
        self._dedup_memory = dedup_memory
        self._tickers: OrderedDict[str, _TickerState] = OrderedDict()  # least recently seen first
        self._cooldown_until: dict[str, datetime] = {}  # rules without a ticker (model, drift), by name
        self._seen: OrderedDict[str, None] = OrderedDict()

    @property
    def tracked_tickers(self) -> int:
        """Tickers the engine holds state for (at most ``max_tickers``)."""
        return len(self._tickers)

    # --- state carried over a restart ----------------------------------------------------
    def restore(self, fired: Iterable[tuple[str, str | None, datetime]], keys: Iterable[str] = ()) -> None:
        """Re-arm cooldowns from alerts raised before a restart: (rule, ticker, created_at)."""
        by_name = {rule.name: rule for rule in self.rules.rules}
        for rule_name, ticker, created_at in fired:
            rule = by_name.get(rule_name)
            if rule is None:
                continue
            until = created_at + rule.cooldown
            cooldowns = self._cooldowns(ticker)
            if until > cooldowns.get(rule_name, datetime.min.replace(tzinfo=UTC)):
                cooldowns[rule_name] = until
        for key in keys:
            self._remember(key)

    def warm(self, aggregates: Iterable[Aggregate]) -> int:
        """Take in aggregates of before a restart (each series' oldest first) without evaluating any
        rule: the next window is judged against the baseline the engine had, instead of waiting
        ``min_history`` windows again (hours, for hourly windows). Returns how many were taken."""
        taken = 0
        for agg in aggregates:
            self._ticker(agg.ticker).series.setdefault(agg.window, _WindowSeries()).observe(agg)
            taken += 1
        return taken

    # --- inputs ----------------------------------------------------------------------------
    def on_aggregate(self, agg: Aggregate) -> list[Alert]:
        series = self._ticker(agg.ticker).series.setdefault(agg.window, _WindowSeries())
        series.observe(agg)
        alerts = []
        for rule in self.rules.enabled_rules():
            if isinstance(rule, SentimentShiftRule):
                alert = self._sentiment_shift(rule, agg, series)
            elif isinstance(rule, VolumeSpikeRule):
                alert = self._volume_spike(rule, agg, series)
            else:
                continue
            if alert is not None:
                alerts.append(alert)
        return alerts

    def on_scored(self, doc: ScoredDocument) -> list[Alert]:
        self.stats.documents += 1
        for ticker in doc.tickers:
            self._keep_document(ticker, doc)
        alerts = []
        for rule in self.rules.enabled_rules():
            if isinstance(rule, NegativeBurstRule):
                for ticker in doc.tickers:
                    alert = self._negative_burst(rule, ticker, doc)
                    if alert is not None:
                        alerts.append(alert)
        return alerts

    def on_control(self, msg: ControlMessage) -> list[Alert]:
        alerts = []
        for rule in self.rules.enabled_rules():
            alert = None
            if isinstance(rule, ModelRule) and msg.action in rule.actions:
                verb = "promoted to champion" if msg.action == "promote" else "rolled back to"
                text = f"Model {msg.model_version}: {verb}" if msg.action == "promote" else f"Model {verb} {msg.model_version}"
                if msg.reason:
                    text += f" ({msg.reason})"
                alert = self._fire(rule, kind="model", ticker=None, window=None, start=msg.issued_at, end=None,
                                   value=None, baseline=None, threshold=None, message=text, documents=[])
            elif isinstance(rule, DriftRule) and msg.action == "drift":
                fired = _drift_monitors(msg.details)
                wanted = [m for m in fired if not rule.monitors or m in rule.monitors]
                if rule.monitors and not wanted:
                    continue
                monitor = wanted[0] if wanted else None
                prefix = f"{monitor}_" if monitor and f"{monitor}_statistic" in msg.details else ""
                statistic = _number(msg.details.get(f"{prefix}statistic"))
                threshold = _number(msg.details.get(f"{prefix}threshold"))
                monitor = ", ".join(wanted) or None
                shown = ", ".join(f"{k}={v}" for k, v in sorted(msg.details.items()))
                text = f"Drift detected for model {msg.model_version}" + (f" by {monitor}" if monitor else "")
                if msg.reason:
                    text += f": {msg.reason}"
                if shown:
                    text += f" [{shown}]"
                alert = self._fire(rule, kind="drift", ticker=None, window=None, start=msg.issued_at, end=None,
                                   value=statistic, baseline=None, threshold=threshold, message=text[:4096],
                                   documents=[])
            if alert is not None:
                alerts.append(alert)
        return alerts

    # --- rules ------------------------------------------------------------------------------
    def _sentiment_shift(self, rule: SentimentShiftRule, agg: Aggregate, series: _WindowSeries) -> Alert | None:
        if not self._applies(rule, agg) or agg.count < rule.min_count:
            return None
        if self._history(series, agg.sentiment_z) < rule.min_history:
            return None
        mean, std, n = series.stats(0)
        z = agg.sentiment_z if agg.sentiment_z is not None else _z(agg.mean_score, mean, std, n, 2)
        if z is None or not math.isfinite(z):
            return None
        hit = {"both": abs(z) >= rule.threshold, "up": z >= rule.threshold, "down": z <= -rule.threshold}
        if not hit[rule.direction] or self._stale(rule, agg.window_end):
            return None
        verb = "fell" if z < 0 else "rose"
        against = f" vs baseline {mean:+.3f}" if mean is not None else ""
        message = (f"{agg.ticker} {agg.window} sentiment {verb}: mean score {agg.mean_score:+.3f}{against} "
                   f"(z={z:+.2f}, threshold ±{rule.threshold:g}, {agg.count} documents, "
                   f"window from {agg.window_start.isoformat()})")
        docs = self._top_documents(agg.ticker, agg.window_start, agg.window_end, rule.top_documents,
                                   lowest_first=z < 0)
        return self._fire(rule, kind="sentiment_shift", ticker=agg.ticker, window=agg.window, start=agg.window_start,
                          end=agg.window_end, value=agg.mean_score, baseline=mean, threshold=rule.threshold,
                          message=message, documents=docs)

    def _volume_spike(self, rule: VolumeSpikeRule, agg: Aggregate, series: _WindowSeries) -> Alert | None:
        if not self._applies(rule, agg) or agg.count < rule.min_count:
            return None
        if self._history(series, agg.volume_z) < rule.min_history:
            return None
        mean, std, n = series.stats(1)
        z = agg.volume_z if agg.volume_z is not None else _z(agg.count, mean, std, n, 2)
        if z is None or not math.isfinite(z) or z < rule.threshold or self._stale(rule, agg.window_end):
            return None
        against = f" vs baseline {mean:.1f}" if mean is not None else ""
        message = (f"{agg.ticker} {agg.window} volume spike: {agg.count} documents{against} "
                   f"(z={z:+.2f}, threshold {rule.threshold:g}, mean score {agg.mean_score:+.3f})")
        docs = self._top_documents(agg.ticker, agg.window_start, agg.window_end, rule.top_documents,
                                   lowest_first=None)
        return self._fire(rule, kind="volume_spike", ticker=agg.ticker, window=agg.window, start=agg.window_start,
                          end=agg.window_end, value=float(agg.count), baseline=mean, threshold=rule.threshold,
                          message=message, documents=docs)

    def _negative_burst(self, rule: NegativeBurstRule, ticker: str, doc: ScoredDocument) -> Alert | None:
        if not rule.matches_ticker(ticker):
            return None
        if doc.sentiment.label != "negative" or doc.sentiment.confidence < rule.min_confidence:
            return None
        burst = self._ticker(ticker).bursts.setdefault(rule.name, _Burst())
        at = burst.add(doc)
        if at is None:
            return None
        burst.prune(rule.within, keep=max(4 * rule.count, 256))
        # Any `count` negatives within `within` of each other, in whatever order they arrived: a
        # new burst holds the new document, so only spans around it need looking at.
        i, j = densest_span(burst.times, at, rule.within)
        if j - i < rule.count or self._stale(rule, burst.times[j - 1]):
            return None  # a stale burst stays: a fresh negative may yet join it, and the alert is then news
        now = burst.times[j - 1]
        in_window = burst.take(i, j)
        # One alert per tumbling bucket of `within`, of the burst's newest document (stable on replay).
        span = rule.within.total_seconds()
        bucket = datetime.fromtimestamp(math.floor(now.timestamp() / span) * span, UTC)
        ranked = sorted(in_window, key=lambda d: d.score)[: rule.top_documents]
        window = format_duration(rule.within)
        message = (f"{ticker}: {len(in_window)} negative documents (confidence >= {rule.min_confidence:g}) "
                   f"within {window}, up to {now.isoformat()}")
        return self._fire(rule, kind="negative_burst", ticker=ticker, window=window, start=bucket,
                          end=bucket + rule.within, value=float(len(in_window)), baseline=None,
                          threshold=float(rule.count), message=message, documents=ranked)

    # --- shared ------------------------------------------------------------------------------
    def _history(self, series: _WindowSeries, stream_z: float | None) -> int:
        """Earlier windows known to lie behind this window's z. The stream gives a z from as few as
        FINSENT_WINDOW_MIN_BASELINE windows and the aggregate does not say how many, so a rule asking
        for more waits until the engine has seen that many itself."""
        return max(series.closed, self.stream_min_baseline if stream_z is not None else 0)

    def _stale(self, rule: TickerRule, at: datetime) -> bool:
        """Whether what an alert would report, as of ``at``, is older than the rule's ``max_age``: old
        news (a feed's backlog on its first poll, ingest catching up, a backfill, a DLQ replay) still
        fills the windows and baselines, but pages nobody."""
        if rule.max_age <= timedelta(0) or self.clock() - at <= rule.max_age:
            return False
        self.stats.stale += 1
        return True

    @staticmethod
    def _applies(rule: SentimentShiftRule | VolumeSpikeRule, agg: Aggregate) -> bool:
        return rule.matches_ticker(agg.ticker) and (not rule.windows or agg.window in rule.windows)

    def _fire(self, rule, *, kind, ticker, window, start, end, value, baseline, threshold, message,
              documents) -> Alert | None:
        key = idempotency_key(rule.name, ticker, window, start)
        if key in self._seen:
            self.stats.deduplicated += 1
            return None
        now = self.clock()
        cooldowns = self._cooldowns(ticker)
        until = cooldowns.get(rule.name)
        if until is not None and now < until:
            self.stats.cooled_down += 1
            return None
        self._remember(key)
        if rule.cooldown > timedelta(0):
            cooldowns[rule.name] = now + rule.cooldown
        return Alert(
            idempotency_key=key, rule=rule.name, kind=kind, ticker=ticker, window=window, window_start=start,
            value=value, baseline=baseline, threshold=threshold, message=message[:4096], documents=documents,
            dashboard_url=dashboard_url(self.dashboard_template, rule=rule.name, ticker=ticker, window=window,
                                        start=start, end=end),
            created_at=now,
        )

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._dedup_memory:
            self._seen.popitem(last=False)

    def _ticker(self, ticker: str) -> _TickerState:
        """The ticker's state, now the most recently seen; the least recent goes beyond ``max_tickers``."""
        state = self._tickers.get(ticker)
        if state is None:
            state = self._tickers[ticker] = _TickerState(docs=deque(maxlen=self._docs_per_ticker))
            while len(self._tickers) > self._max_tickers:
                self._tickers.popitem(last=False)
        self._tickers.move_to_end(ticker)
        return state

    def _cooldowns(self, ticker: str | None) -> dict[str, datetime]:
        return self._cooldown_until if ticker is None else self._ticker(ticker).cooldown_until

    def _keep_document(self, ticker: str, doc: ScoredDocument) -> None:
        docs = self._ticker(ticker).docs
        if all(d.id != doc.id for d in docs):
            docs.append(doc)

    def _top_documents(self, ticker: str, start: datetime, end: datetime, n: int,
                       lowest_first: bool | None) -> list[AlertDocument]:
        """Documents of the window that moved it most: lowest scores for a fall, highest for a rise,
        largest |score| when there is no direction."""
        if n == 0:
            return []
        state = self._tickers.get(ticker)
        docs = [d for d in (state.docs if state is not None else ())
                if any(t is not None and start <= t < end for t in (d.published_at, d.ingested_at, d.scored_at))]
        if lowest_first is None:
            key = lambda d: -abs(d.sentiment.score)  # noqa: E731
        elif lowest_first:
            key = lambda d: d.sentiment.score  # noqa: E731
        else:
            key = lambda d: -d.sentiment.score  # noqa: E731
        return [_as_alert_doc(d) for d in sorted(docs, key=key)[:n]]


def _as_alert_doc(doc: ScoredDocument) -> AlertDocument:
    return AlertDocument(id=doc.id, title=doc.title, url=doc.url, score=doc.sentiment.score)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _drift_monitors(details: dict) -> list[str]:
    """Monitors that fired: ``details["monitor"]``, or each ``<monitor>_statistic`` key (retrain/)."""
    if isinstance(details.get("monitor"), str):
        return [details["monitor"]]
    return sorted(key.removesuffix("_statistic") for key in details if key.endswith("_statistic") and key != "_statistic")
