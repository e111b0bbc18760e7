"""normalise → tickers → dedup → Kafka, for one batch of items from one source.

Synchronous and single-threaded by design (the dedup index and the producer wait are not
shared between threads); async callers go through :meth:`Pipeline.submit`, which runs batches
one after another on a dedicated thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry

from finsent.schemas import RawDocument, utc_now
from finsent.settings import Settings
from ingest.dedup import DedupIndex
from ingest.items import FetchResult, Rejected, SourceItem
from ingest.metrics import IngestMetrics
from ingest.normalise import Normaliser
from ingest.producer import KafkaSink
from ingest.tickers import TickerDictionary, TickerExtractor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchReport:
    fetched: int = 0
    produced: int = 0
    duplicates: int = 0
    held_back: int = 0  # undated backlog of a new source: remembered as seen, not produced
    rejected: list[Rejected] = field(default_factory=list)
    failed: list[tuple[RawDocument, str]] = field(default_factory=list)
    documents: list[RawDocument] = field(default_factory=list)  # the ones produced

    @property
    def delivered(self) -> bool:
        """True when nothing was lost to Kafka."""
        return not self.failed

    @property
    def settled(self) -> bool:
        """True when nothing was lost to Kafka and nothing was rejected for now only: the source may
        move its cursor. Else the next poll reads the same items again (dedup drops those produced)."""
        return self.delivered and not any(bad.temporary for bad in self.rejected)

    def add(self, other: BatchReport) -> None:
        self.fetched += other.fetched
        self.produced += other.produced
        self.duplicates += other.duplicates
        self.held_back += other.held_back
        self.rejected += other.rejected
        self.failed += other.failed


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: IngestMetrics,
        sink: KafkaSink,
        normaliser: Normaliser,
        dedup: DedupIndex | None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = sink
        self.normaliser = normaliser
        self.dedup = dedup
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        *,
        dedup: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> Pipeline:
        extractor = TickerExtractor(TickerDictionary.load(settings.tickers_file))
        index = None
        if dedup:
            index = DedupIndex(
                settings.state_dir / "ingest" / f"dedup-{settings.topic_prefix}.sqlite3",
                window_hours=settings.dedup_window_hours,
                retention_days=settings.dedup_retention_days,
                threshold=settings.dedup_threshold,
                clock=clock,
            )
        return cls(
            settings,
            metrics=IngestMetrics(registry or CollectorRegistry()),
            sink=KafkaSink(settings),
            normaliser=Normaliser(extractor, future_tolerance=settings.ingest_future_tolerance, clock=clock),
            dedup=index,
        )

    def start(self) -> None:
        if self.dedup is not None:
            self.dedup.start()
        self.sink.start()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-pipeline")

    def close(self) -> None:
        """Flush what Kafka still holds, then release everything (safe to call twice)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.sink.close()
        if self.dedup is not None:
            self.dedup.close()

    async def submit(self, source: str, batch: FetchResult | list[SourceItem], *,
                     summarise: bool = False, scope: str | None = None) -> BatchReport:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          lambda: self.process(source, batch, summarise=summarise, scope=scope))

    def process(self, source: str, batch: FetchResult | list[SourceItem], *, summarise: bool = False,
                scope: str | None = None) -> BatchReport:
        """Process one batch from ``source`` (the metric label); never raises for bad documents.

        Each skipped document is logged, or with ``summarise`` the batch's skips in one line: a request
        from outside (the push endpoint) must not write a log line per document it sends.
        ``scope``: the push sender's (ingest.push_tokens.Sender.scope), None for ingest's own sources. By URL or text
        its documents make duplicates of its own only (ingest.dedup), and one without a ``source_id`` takes an id of
        its source's, not the URL's alone (finsent.schemas.document_id).
        Whatever happens, no document of the batch stays staged in the dedup index: what Kafka
        did not acknowledge is forgotten, so sending it again later is never taken for a duplicate.

        The first poll of a source new to the dedup index (``first_poll``, and no item of the batch is one of
        its documents seen before) brings its backlog: an undated item there is not news now, yet the windows
        would put it at its ingestion time, fifty of them in the current minute. Those are held back: remembered
        as seen, so no later poll takes them for new, but not produced. Without a dedup index nothing is held back
        (every poll would produce them again anyway).
        """
        result = batch if isinstance(batch, FetchResult) else FetchResult(items=list(batch))
        report = BatchReport()
        for bad in result.rejected:
            self._reject(source, bad, report)
        to_send: list[RawDocument] = []
        where: dict[str, str] = {}
        known = False  # an item of the batch was this source's before: the source is not new
        try:
            for item in result.items:
                report.fetched += 1
                self.metrics.fetched.labels(source).inc()
                doc = self._normalise(source, item, report, url_shared=scope is None)
                if doc is None:
                    continue
                duplicate = self.dedup.check(doc, scope) if self.dedup is not None else None
                if duplicate is not None:
                    known = known or (duplicate.kind == "id" and duplicate.of not in where)  # not this batch's
                    report.duplicates += 1
                    self.metrics.duplicates.labels(source, duplicate.kind).inc()
                    # A feed re-read each poll repeats its items by id (95 lines a poll for a subreddit): DEBUG;
                    # a URL or near-duplicate is a judgement an operator may want to check: INFO.
                    log.log(logging.DEBUG if duplicate.kind == "id" else logging.INFO,
                            "%s: duplicate (%s, similarity %.2f) of %s: %s %s", source, duplicate.kind,
                            duplicate.similarity, duplicate.of, doc.id, doc.url or doc.source_id)
                    continue
                to_send.append(doc)
                where[doc.id] = item.where
            if result.first_poll and not known and self.dedup is not None:
                to_send = self._hold_back_undated(source, to_send, report)
            if to_send:
                self._deliver(source, to_send, where, report)
        finally:
            if self.dedup is not None and to_send:
                self.dedup.rollback(d.id for d in to_send)  # no-op for the committed ones
            _log_skips(source, report.rejected, summarise)
        if report.settled and result.on_delivered is not None:
            result.on_delivered()
        return report

    def _hold_back_undated(self, source: str, docs: list[RawDocument], report: BatchReport) -> list[RawDocument]:
        """The dated documents; the undated ones are committed to the dedup index only."""
        backlog = [doc.id for doc in docs if doc.published_at is None]
        if backlog:
            self.dedup.commit(backlog)
            report.held_back = len(backlog)
            self.metrics.held_back.labels(source).inc(len(backlog))
            log.info("%s: first poll of a new source: held back %d undated document(s) of its backlog "
                     "(remembered as seen, not produced)", source, len(backlog))
        return [doc for doc in docs if doc.published_at is not None]

    def _normalise(self, source: str, item: SourceItem, report: BatchReport, *, url_shared: bool) -> RawDocument | None:
        try:
            return self.normaliser.normalise(item, url_shared=url_shared)
        except Rejected as bad:
            self._reject(source, bad, report)
        except Exception as exc:  # a bug on one document must not fail its batch: the source would retry it forever
            log.exception("%s: cannot normalise %s", source, item.where or "a document")
            self._reject(source, Rejected("unexpected", f"{type(exc).__name__}: {exc}", item.where), report)
        return None

    def _deliver(self, source: str, docs: list[RawDocument], where: dict[str, str], report: BatchReport) -> None:
        delivery = self.sink.send(docs)
        if self.dedup is not None:
            self.dedup.commit(d.id for d in delivery.acked)
        report.produced += len(delivery.acked)
        report.documents = delivery.acked
        self.metrics.produced.labels(source).inc(len(delivery.acked))
        for doc, code, error in delivery.refused:  # sending it again would fail again: a bad document
            self._reject(source, Rejected(code, f"Kafka refused document {doc.id}: {error}", where[doc.id]), report)
        for doc, error in delivery.failed:
            self.metrics.errors.labels(source, "delivery", "kafka").inc()
            log.error("%s: document %s NOT delivered to %s: %s", source, doc.id, self.sink.topic, error)
        report.failed = delivery.failed

    def _reject(self, source: str, bad: Rejected, report: BatchReport) -> None:
        report.rejected.append(bad)
        self.metrics.errors.labels(source, "invalid", bad.code).inc()


def _log_skips(source: str, rejected: list[Rejected], summarise: bool) -> None:
    if not rejected:
        return
    if not summarise:
        for bad in rejected:
            log.warning("%s: skipped %s", source, bad)
        return
    reasons = Counter(bad.code for bad in rejected)
    log.warning("%s: skipped %d document(s) of a batch (%s); the first: %s", source, len(rejected),
                ", ".join(f"{code} {count}" for code, count in reasons.most_common()), rejected[0])
