"""Applies a batch of per-ticker window events to the window state and publishes the
changed windows. The state store is any mutable mapping ticker → state dict (the Faust
table in the worker, a dict in tests)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from finsent.schemas import Aggregate, utc_now
from finsent.settings import Settings
from finsent.window_sizes import parse_windows
from stream.es_sink import BulkItem, ElasticsearchSink
from stream.metrics import WorkerMetrics
from stream.windows import TickerWindows, WindowEvent, aggregate_id, refusal

log = logging.getLogger(__name__)

SendAggregate = Callable[[Aggregate], Awaitable[Awaitable[Any]]]


@dataclass(frozen=True)
class WindowUpdate:
    aggregates: list[Aggregate]  # every window the batch changed
    late: int  # ticker events older than every kept window
    states: dict[str, Any]  # ticker → new state, to store once the aggregates are out
    refused: dict[str, int] = field(default_factory=dict)  # events kept out of the windows, by reason (refusal)
    versions: dict[str, int] = field(default_factory=dict)  # ticker → version of its aggregates (TickerWindows)


def apply_events(store: Mapping[str, Any], events: Sequence[WindowEvent], sizes: dict[str, int],
                 baseline: int, min_baseline: int, now: datetime, *,
                 future_tolerance: timedelta = timedelta(minutes=5)) -> WindowUpdate:
    """Count events against the stored state, without writing it. Events dated more than
    ``future_tolerance`` after ``now``, or outside the calendar, are kept out (``refused``).

    The caller stores ``states`` only after the aggregates are published: a batch that fails
    half-way is then counted again from the same state on its retry and publishes the same
    aggregates, instead of finding its events already counted and publishing nothing.
    """
    by_ticker: dict[str, list[WindowEvent]] = {}
    for event in events:
        by_ticker.setdefault(event.ticker, []).append(event)
    aggregates: list[Aggregate] = []
    states: dict[str, Any] = {}
    versions: dict[str, int] = {}
    late = 0
    refused: Counter[str] = Counter()
    for ticker, ticker_events in by_ticker.items():
        windows = TickerWindows.from_state(ticker, sizes, store.get(ticker), baseline, min_baseline)
        # Windows a future event left in state written before it was refused; twice the tolerance, so that
        # a clock set back a little does not forget a window an event in tolerance opened.
        windows.forget_after(now.timestamp() + 2 * future_tolerance.total_seconds())
        touched: dict[tuple[str, int], None] = {}
        for event in ticker_events:
            if windows.counted(event):
                continue
            reason = refusal(event, sizes, now, future_tolerance)
            if reason is not None:
                refused[reason] += 1
                continue
            changed = windows.add(event)
            if changed is None:
                continue
            late += len(sizes) - len(changed)
            touched.update(dict.fromkeys(changed))
        for name, start in touched:
            aggregates.append(windows.aggregate(name, start, now))
        if touched:
            windows.prune()
            states[ticker] = windows.to_state()  # one state write (changelog record) per ticker and batch
            versions[ticker] = windows.version
    return WindowUpdate(aggregates, late, states, dict(refused), versions)


class WindowAggregator:
    def __init__(self, settings: Settings, sink: ElasticsearchSink, metrics: WorkerMetrics, *,
                 send_aggregate: SendAggregate, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.sizes = parse_windows(settings.windows)
        self.sink = sink
        self.metrics = metrics
        self.send_aggregate = send_aggregate
        self.clock = clock

    async def process(self, store: MutableMapping[str, Any], events: Sequence[WindowEvent]) -> list[Aggregate]:
        """Count the events, publish the windows they changed and store the new state; returns the aggregates
        published (not those superseded by a newer version in Elasticsearch)."""
        # Ingest's own tolerance of clock skew on published_at.
        update = apply_events(store, events, self.sizes, self.settings.window_baseline,
                              self.settings.window_min_baseline, self.clock(),
                              future_tolerance=timedelta(seconds=self.settings.ingest_future_tolerance))
        aggregates = update.aggregates
        if aggregates:
            aggregates = await self._publish(aggregates, update.versions)
        # Stored even where superseded: the events are counted and will be acked, and this worker may be the
        # partition's owner behind one that wrote further before it lost the partition.
        for ticker, state in update.states.items():  # only changed tickers: none without aggregates
            store[ticker] = state
        self.metrics.late_events.inc(update.late)
        for reason, count in update.refused.items():
            self.metrics.refused_events.labels(reason).inc(count)
        if update.refused:
            log.warning("kept %s window events out of the windows (future: dated more than %.0f s ahead; "
                        "out_of_range: outside the calendar)", update.refused, self.settings.ingest_future_tolerance)
        self.metrics.aggregates.inc(len(aggregates))
        return aggregates

    async def _publish(self, aggregates: list[Aggregate], versions: dict[str, int]) -> list[Aggregate]:
        """Index the aggregates, then send those Elasticsearch took; returns them.

        Indexed by id with their ticker's version (external_gte): a replayed batch converges on the same
        documents, and a worker that lost the partition while its batch waited (an Elasticsearch outage through
        a rebalance, which Faust waits for and Kafka then gives up on) cannot overwrite the newer aggregate of
        the partition's new owner, nor send its older one to the alert engine after it."""
        items = [BulkItem(aggregate_id(a), a.model_dump(mode="json"), version=versions[a.ticker]) for a in aggregates]
        rejections, superseded = await self.sink.index_versioned(self.settings.index("aggregates"), items)
        if rejections:  # our own records: a rejection is a bug or a mapping mismatch, say so loudly
            raise RuntimeError(f"Elasticsearch refused aggregates: {rejections[0].reason}")
        if superseded:
            self.metrics.superseded_aggregates.inc(len(superseded))
            log.warning("%d window aggregates not published: Elasticsearch has newer versions (first: %s, version "
                        "%s); this worker's partition has likely gone to another", len(superseded),
                        superseded[0].id, superseded[0].version)
        newer = {item.id for item in superseded}
        fresh = [a for a in aggregates if aggregate_id(a) not in newer]
        deliveries = [await self.send_aggregate(a) for a in fresh]
        for delivery in deliveries:
            await delivery
        return fresh
