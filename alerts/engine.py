"""Pure rule evaluation: records in, :class:`~finsent.schemas.Alert` objects out. No I/O.

The engine keeps a little state per ticker (trailing window statistics, recent documents,
negative bursts, the event times of its alerts) for at most ``max_tickers`` tickers, the least
recently seen going first (the event times of their alerts, for the cooldowns, stay for as many
evicted tickers again), plus dedup keys, and takes its time from an injected clock, so every
decision is reproducible in a unit test. Durable dedup lives in the outbox (the idempotency key is
its primary key); the in-memory set only spares it the work.

A cooldown is counted in event time, not in the time the engine happens to read a record: a rule
raises no second alert for a ticker whose news lies within ``cooldown`` of an alert's news (a
window's figures as the stream reported them, a burst's newest document, a control message's
``issued_at``). Catching up on a backlog therefore neither silences the live windows behind it nor
lets a replayed hour page once per window.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from alerts.payload import dashboard_url, idempotency_key
from alerts.rules import (
    DriftRule,
    ModelRule,
    NegativeBurstRule,
    Rule,
    RulesFile,
    SentimentShiftRule,
    VolumeSpikeRule,
)
from alerts.ticker_state import (
    Burst,
    RecentDocs,
    WindowSeries,
    densest_span,
    event_time,
)
from finsent.durations import format_duration
from finsent.schemas import Aggregate, Alert, AlertDocument, ControlMessage, ScoredDocument

Clock = Callable[[], datetime]

# Model and drift rules have no max_age of their own (alerts/rules.py): a control message issued longer ago than
# a ticker rule's default max_age is a replay after downtime, not news.
CONTROL_MAX_AGE = timedelta(hours=6)
FIRED_MEMORY = 16  # event times of alerts each (rule, ticker) keeps for its cooldown


def _system_clock() -> datetime:
    return datetime.now(UTC)


def _z(value: float, mean: float | None, std: float | None, n: int, min_n: int) -> float | None:
    if mean is None or std is None or n < min_n or std <= 1e-12:
        return None
    return (value - mean) / std


@dataclass
class _TickerState:
    """Everything the engine remembers about one ticker; evicted as a whole."""

    docs: RecentDocs
    series: dict[str, WindowSeries] = field(default_factory=dict)  # by window
    bursts: dict[str, Burst] = field(default_factory=dict)  # by rule name
    fired: dict[str, list[datetime]] = field(default_factory=dict)  # event times of alerts, by rule name


# finsent_alerts_suppressed_total's reasons, and the EngineStats field that counts each.
SUPPRESSED = {"dedup": "deduplicated", "history": "short_history", "stale": "stale", "cooldown": "cooled_down"}


@dataclass
class EngineStats:
    """Documents seen, and rule hits held back: each alert (idempotency key) once per reason, however often it comes."""

    documents: int = 0
    deduplicated: int = 0  # raised already (an update of its window, a replay)
    short_history: int = 0  # fewer earlier windows behind its z than the rule's min_history
    stale: int = 0  # what it reports is older than the rule's max_age
    cooled_down: int = 0  # within the cooldown of an alert of the same rule and ticker

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
        # The alert times of evicted tickers (small next to their windows and documents), least recently seen first:
        # a ticker that comes back stays within its cooldowns. Holds at most max_tickers tickers too.
        self._evicted_fired: OrderedDict[str, dict[str, list[datetime]]] = OrderedDict()
        self._fired: dict[str, list[datetime]] = {}  # rules without a ticker (model, drift), by name
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._counted: OrderedDict[tuple[str, str], None] = OrderedDict()  # (reason, key) already in the stats
        self._longest_window = timedelta(0)  # of the aggregates seen: how far back top documents can reach
        # How long after its window's end a top document can still be shown, from the rules (fixed for the engine's
        # life): None when no rule shows any (nothing is kept), 0 for no limit.
        ages = [rule.max_age for rule in rules.enabled_rules()
                if isinstance(rule, SentimentShiftRule | VolumeSpikeRule) and rule.top_documents]
        self._docs_max_age = None if not ages else timedelta(0) if min(ages) <= timedelta(0) else max(ages)

    @property
    def tracked_tickers(self) -> int:
        """Tickers the engine holds state for (at most ``max_tickers``)."""
        return len(self._tickers)

    # --- state carried over a restart ----------------------------------------------------
    def restore(self, fired: Iterable[tuple[str, str | None, datetime]], keys: Iterable[str] = ()) -> None:
        """Re-arm cooldowns from alerts raised before a restart: (rule, ticker, created_at). The outbox keeps
        no event time, so the creation time stands in for it (the same, for an alert on live news)."""
        names = {rule.name for rule in self.rules.rules}
        for rule_name, ticker, created_at in fired:
            if rule_name in names:
                _note(self._fired_times(ticker, rule_name), created_at)
        for key in keys:
            self._remember(key)

    def warm(self, aggregates: Iterable[Aggregate]) -> int:
        """Take in aggregates of before a restart (each series' oldest first) without evaluating any
        rule: the next window is judged against the baseline the engine had, instead of waiting
        ``min_history`` windows again (hours, for hourly windows). Returns how many were taken."""
        taken = 0
        for agg in aggregates:
            self._series(agg).observe(agg)
            taken += 1
        return taken

    def warm_bursts(self, docs: Iterable[ScoredDocument]) -> int:
        """Take in the confident negatives of before a restart without evaluating any rule, so that a burst
        under way goes on. Those no later than an alert of the rule and ticker (as :meth:`restore` re-armed
        it) may have been its own, already spent, and stay out. Returns how many negatives were kept."""
        kept = 0
        for doc in docs:
            for rule in self.rules.enabled_rules():
                if not isinstance(rule, NegativeBurstRule) or not _counts_for(rule, doc):
                    continue
                for ticker in filter(rule.matches_ticker, doc.tickers):
                    fired = self._fired_times(ticker, rule.name)
                    if not fired or event_time(doc) > fired[-1]:
                        kept += self._burst(rule, ticker, doc) is not None
        return kept

    # --- inputs ----------------------------------------------------------------------------
    def on_aggregate(self, agg: Aggregate) -> list[Alert]:
        series = self._series(agg)
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
        self._keep_document(doc)
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
                alert = self._model(rule, msg)
            elif isinstance(rule, DriftRule) and msg.action == "drift":
                alert = self._drift(rule, msg)
            if alert is not None:
                alerts.append(alert)
        return alerts

    # --- rules ------------------------------------------------------------------------------
    def _sentiment_shift(self, rule: SentimentShiftRule, agg: Aggregate, series: WindowSeries) -> Alert | None:
        if not self._applies(rule, agg) or agg.count < rule.min_count:
            return None
        mean, std, n = series.stats(0)
        z = agg.sentiment_z if agg.sentiment_z is not None else _z(agg.mean_score, mean, std, n, 2)
        if z is None or not math.isfinite(z):
            return None
        hit = {"both": abs(z) >= rule.threshold, "up": z >= rule.threshold, "down": z <= -rule.threshold}
        if not hit[rule.direction]:
            return None
        verb = "fell" if z < 0 else "rose"
        against = f" vs baseline {mean:+.3f}" if mean is not None else ""
        message = (f"{agg.ticker} {agg.window} sentiment {verb}: mean score {agg.mean_score:+.3f}{against} "
                   f"(z={z:+.2f}, threshold ±{rule.threshold:g}, {agg.count} documents, "
                   f"window from {agg.window_start.isoformat()})")
        return self._window_alert(rule, agg, series, agg.sentiment_z, kind="sentiment_shift", value=agg.mean_score,
                                  baseline=mean, z=z, message=message, lowest_first=z < 0)

    def _volume_spike(self, rule: VolumeSpikeRule, agg: Aggregate, series: WindowSeries) -> Alert | None:
        if not self._applies(rule, agg) or agg.count < rule.min_count:
            return None
        mean, std, n = series.stats(1)
        z = agg.volume_z if agg.volume_z is not None else _z(agg.count, mean, std, n, 2)
        if z is None or not math.isfinite(z) or z < rule.threshold:
            return None
        against = f" vs baseline {mean:.1f}" if mean is not None else ""
        message = (f"{agg.ticker} {agg.window} volume spike: {agg.count} documents{against} "
                   f"(z={z:+.2f}, threshold {rule.threshold:g}, mean score {agg.mean_score:+.3f})")
        return self._window_alert(rule, agg, series, agg.volume_z, kind="volume_spike", value=float(agg.count),
                                  baseline=mean, z=z, message=message, lowest_first=None)

    def _window_alert(self, rule: SentimentShiftRule | VolumeSpikeRule, agg: Aggregate, series: WindowSeries,
                      stream_z: float | None, *, kind: str, value: float, baseline: float | None, z: float,
                      message: str, lowest_first: bool | None) -> Alert | None:
        """A window's hit, unless held back (see :meth:`_suppression`); ``z`` is what the rule compared."""
        key = idempotency_key(rule.name, agg.ticker, agg.window, agg.window_start)
        short = self._history(series, stream_z) < rule.min_history
        if not self._admit(rule, agg.ticker, key, _window_time(agg), agg.window_end, short_history=short):
            return None
        docs = self._top_documents(agg.ticker, agg.window_start, agg.window_end, rule.top_documents, lowest_first)
        return self._raise(rule, key, _window_time(agg), kind=kind, ticker=agg.ticker, window=agg.window,
                           start=agg.window_start, end=agg.window_end, value=value, baseline=baseline,
                           threshold=rule.threshold, z=z, message=message, documents=docs)

    def _negative_burst(self, rule: NegativeBurstRule, ticker: str, doc: ScoredDocument) -> Alert | None:
        if not rule.matches_ticker(ticker) or not _counts_for(rule, doc):
            return None
        at = self._burst(rule, ticker, doc)
        if at is None:
            return None
        burst = self._ticker(ticker).bursts[rule.name]
        # Any `count` negatives within `within` of each other, in whatever order they arrived: a
        # new burst holds the new document, so only spans around it need looking at.
        i, j = densest_span(burst.times, at, rule.within)
        if j - i < rule.count:
            return None
        # One alert per burst, keyed by its first document: the same on a replay, and apart from the next burst.
        first, newest = burst.times[i], burst.times[j - 1]
        window = format_duration(rule.within)
        key = idempotency_key(rule.name, ticker, window, first)
        reason = self._suppression(rule, ticker, key, newest, newest)
        if reason is not None:
            if reason == "dedup":
                burst.take(i, j)  # raised before (a replay): its documents are spent
            # otherwise they stay: a burst that is stale or cooling down may yet grow into news
            self._count(reason, key)
            return None
        in_window = burst.take(i, j)
        ranked = sorted(in_window, key=lambda d: d.score)[: rule.top_documents]
        message = (f"{ticker}: {len(in_window)} negative documents (confidence >= {rule.min_confidence:g}) "
                   f"within {window}, up to {newest.isoformat()}")
        return self._raise(rule, key, newest, kind="negative_burst", ticker=ticker, window=window, start=first,
                           end=first + rule.within, value=float(len(in_window)), baseline=None,
                           threshold=float(rule.count), z=None, message=message, documents=ranked)

    def _model(self, rule: ModelRule, msg: ControlMessage) -> Alert | None:
        verb = "promoted to champion" if msg.action == "promote" else "rolled back to"
        text = f"Model {msg.model_version}: {verb}" if msg.action == "promote" else f"Model {verb} {msg.model_version}"
        if msg.reason:
            text += f" ({msg.reason})"
        return self._control_alert(rule, msg, kind="model", value=None, threshold=None, message=text)

    def _drift(self, rule: DriftRule, msg: ControlMessage) -> Alert | None:
        fired = _drift_monitors(msg.details)
        wanted = [m for m in fired if not rule.monitors or m in rule.monitors]
        if rule.monitors and not wanted:
            return None
        monitor = wanted[0] if wanted else None
        prefix = f"{monitor}_" if monitor and f"{monitor}_statistic" in msg.details else ""
        monitor = ", ".join(wanted) or None
        shown = ", ".join(f"{k}={v}" for k, v in sorted(msg.details.items()))
        text = f"Drift detected for model {msg.model_version}" + (f" by {monitor}" if monitor else "")
        if msg.reason:
            text += f": {msg.reason}"
        if shown:
            text += f" [{shown}]"
        return self._control_alert(rule, msg, kind="drift", value=_number(msg.details.get(f"{prefix}statistic")),
                                   threshold=_number(msg.details.get(f"{prefix}threshold")), message=text)

    def _control_alert(self, rule: ModelRule | DriftRule, msg: ControlMessage, *, kind: str, value: float | None,
                       threshold: float | None, message: str) -> Alert | None:
        key = idempotency_key(rule.name, None, None, msg.issued_at)
        if not self._admit(rule, None, key, msg.issued_at, msg.issued_at):
            return None
        return self._raise(rule, key, msg.issued_at, kind=kind, ticker=None, window=None, start=msg.issued_at,
                           end=None, value=value, baseline=None, threshold=threshold, z=None, message=message,
                           documents=[])

    # --- shared ------------------------------------------------------------------------------
    def _history(self, series: WindowSeries, stream_z: float | None) -> int:
        """Earlier windows known to lie behind this window's z. The stream gives a z from as few as
        FINSENT_WINDOW_MIN_BASELINE windows and the aggregate does not say how many, so a rule asking
        for more waits until the engine has seen that many itself."""
        return max(series.closed, self.stream_min_baseline if stream_z is not None else 0)

    def _stale(self, rule: Rule, news_at: datetime) -> bool:
        """Whether what an alert would report, as of ``news_at``, is older than the rule's ``max_age``: old
        news (a feed's backlog on its first poll, ingest catching up, a backfill, a DLQ replay, control
        messages read again after downtime) still fills the windows and baselines, but pages nobody."""
        max_age = getattr(rule, "max_age", CONTROL_MAX_AGE)
        return max_age > timedelta(0) and self.clock() - news_at > max_age

    @staticmethod
    def _applies(rule: SentimentShiftRule | VolumeSpikeRule, agg: Aggregate) -> bool:
        return rule.matches_ticker(agg.ticker) and (not rule.windows or agg.window in rule.windows)

    def _suppression(self, rule: Rule, ticker: str | None, key: str, at: datetime, news_at: datetime,
                     short_history: bool = False) -> str | None:
        """Why a hit raises no alert (a reason of SUPPRESSED), or None. ``at`` is its event time for the
        cooldown, ``news_at`` the time :meth:`_stale` judges."""
        if key in self._seen:
            return "dedup"
        if short_history:
            return "history"
        if self._stale(rule, news_at):
            return "stale"
        if _cooled(self._fired_times(ticker, rule.name), at, rule.cooldown):
            return "cooldown"
        return None

    def _admit(self, rule: Rule, ticker: str | None, key: str, at: datetime, news_at: datetime,
               short_history: bool = False) -> bool:
        reason = self._suppression(rule, ticker, key, at, news_at, short_history)
        if reason is not None:
            self._count(reason, key)
        return reason is None

    def _count(self, reason: str, key: str) -> None:
        """Count a held-back alert once per reason: the stream re-sends a window on every batch."""
        if (reason, key) not in self._counted:
            field_name = SUPPRESSED[reason]
            setattr(self.stats, field_name, getattr(self.stats, field_name) + 1)
            _bounded_add(self._counted, (reason, key), self._dedup_memory)

    def _raise(self, rule: Rule, key: str, at: datetime, *, kind, ticker, window, start, end, value, baseline,
               threshold, z, message, documents) -> Alert:
        self._remember(key)
        if rule.cooldown > timedelta(0):
            _note(self._fired_times(ticker, rule.name), at)
        return Alert(
            idempotency_key=key, rule=rule.name, kind=kind, ticker=ticker, window=window, window_start=start,
            value=value, baseline=baseline, threshold=threshold, z=z, message=message[:4096], documents=documents,
            dashboard_url=dashboard_url(self.dashboard_template, rule=rule.name, ticker=ticker, window=window,
                                        start=start, end=end),
            created_at=self.clock(),
        )

    def _remember(self, key: str) -> None:
        _bounded_add(self._seen, key, self._dedup_memory)

    def _ticker(self, ticker: str) -> _TickerState:
        """The ticker's state, now the most recently seen; the least recent goes beyond ``max_tickers``."""
        state = self._tickers.get(ticker)
        if state is None:
            state = self._tickers[ticker] = _TickerState(docs=RecentDocs(self._docs_per_ticker),
                                                         fired=self._evicted_fired.pop(ticker, {}))
            while len(self._tickers) > self._max_tickers:
                gone, evicted = self._tickers.popitem(last=False)
                if any(evicted.fired.values()):
                    self._evicted_fired[gone] = evicted.fired
                    while len(self._evicted_fired) > self._max_tickers:
                        self._evicted_fired.popitem(last=False)
        self._tickers.move_to_end(ticker)
        return state

    def _series(self, agg: Aggregate) -> WindowSeries:
        self._longest_window = max(self._longest_window, agg.window_end - agg.window_start)
        return self._ticker(agg.ticker).series.setdefault(agg.window, WindowSeries())

    def _burst(self, rule: NegativeBurstRule, ticker: str, doc: ScoredDocument) -> datetime | None:
        """Add ``doc`` to the rule's negatives of ``ticker``; its event time, or None (see :meth:`Burst.add`)."""
        burst = self._ticker(ticker).bursts.setdefault(rule.name, Burst())
        at = burst.add(doc)
        if at is not None:
            burst.prune(rule.within, keep=max(4 * rule.count, 256))
        return at

    def _fired_times(self, ticker: str | None, rule_name: str) -> list[datetime]:
        fired = self._fired if ticker is None else self._ticker(ticker).fired
        return fired.setdefault(rule_name, [])

    def _docs_horizon(self) -> datetime | None:
        """The oldest time a document can still be shown for (None: no limit): a window can raise an alert
        until ``max_age`` after its end."""
        if not self._docs_max_age:
            return None
        return self.clock() - self._docs_max_age - self._longest_window

    def _keep_document(self, doc: ScoredDocument) -> None:
        if self._docs_max_age is None:
            return
        oldest = self._docs_horizon()
        for ticker in doc.tickers:
            docs = self._ticker(ticker).docs
            docs.add(doc)
            docs.prune(oldest)

    def _top_documents(self, ticker: str, start: datetime, end: datetime, n: int,
                       lowest_first: bool | None) -> list[AlertDocument]:
        """Documents of the window that moved it most: lowest scores for a fall, highest for a rise,
        largest |score| when there is no direction."""
        state = self._tickers.get(ticker)
        if n == 0 or state is None:
            return []
        state.docs.prune(self._docs_horizon())
        if lowest_first is None:
            key = lambda d: -abs(d.score)  # noqa: E731
        elif lowest_first:
            key = lambda d: d.score  # noqa: E731
        else:
            key = lambda d: -d.score  # noqa: E731
        return [AlertDocument(id=d.id, title=d.title, url=d.url, score=d.score)
                for d in sorted(state.docs.within(start, end), key=key)[:n]]


def _window_time(agg: Aggregate) -> datetime:
    """A window's news time for the cooldown: when the stream reported these figures (``updated_at``, the
    same on a replay), at most the window's end (a backfill reports old windows late)."""
    return min(max(agg.updated_at, agg.window_start), agg.window_end)


def _counts_for(rule: NegativeBurstRule, doc: ScoredDocument) -> bool:
    return doc.sentiment.label == "negative" and doc.sentiment.confidence >= rule.min_confidence


def _cooled(fired: list[datetime], at: datetime, cooldown: timedelta) -> bool:
    """Whether an alert of event time ``at`` lies within ``cooldown`` of one already raised (``fired``, sorted)."""
    i = bisect.bisect_right(fired, at - cooldown)
    return cooldown > timedelta(0) and i < len(fired) and fired[i] < at + cooldown


def _note(fired: list[datetime], at: datetime) -> None:
    """Add an alert's event time to ``fired`` (sorted), keeping the latest FIRED_MEMORY."""
    bisect.insort(fired, at)
    del fired[:-FIRED_MEMORY]


def _bounded_add(memory: OrderedDict, key: object, limit: int) -> None:
    memory[key] = None
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _drift_monitors(details: dict) -> list[str]:
    """Monitors that fired: ``details["monitor"]``, or each ``<monitor>_statistic`` key (retrain/)."""
    if isinstance(details.get("monitor"), str):
        return [details["monitor"]]
    return sorted(key.removesuffix("_statistic") for key in details
                  if key.endswith("_statistic") and key != "_statistic")
