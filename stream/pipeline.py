"""One raw batch, start to finish: validate → score → index → produce. Kafka-agnostic.

Two steps, so that the worker can score one batch while the one before is delivered:
:meth:`~RawBatchPipeline.score` (validate, score) and :meth:`~RawBatchPipeline.deliver`
(index, produce). The caller acknowledges a batch's offsets only after ``deliver``
returns, which it does once Elasticsearch has acknowledged (or definitively rejected into
the DLQ) every document and every produced message is on the broker. A crash anywhere
before that means the batch is delivered again; ids make the re-delivery overwrite.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from finsent.schemas import DeadLetter, RawDocument, RecordError, ScoredDocument, Sentiment, utc_now
from finsent.settings import Settings
from model.scorer import ScorerCrashed, ScorerUnavailable
from stream.es_sink import BulkItem, ElasticsearchSink
from stream.metrics import WorkerMetrics
from stream.model_holder import ModelHolder, Scorer
from stream.validation import Origin, dead_letter, parse_raw
from stream.windows import WindowEvent

log = logging.getLogger(__name__)

# Each returns an awaitable that completes when the broker has the message.
SendDeadLetter = Callable[[bytes | None, DeadLetter], Awaitable[Awaitable[Any]]]
SendScored = Callable[[bytes | None, ScoredDocument], Awaitable[Awaitable[Any]]]
SendWindowEvent = Callable[[WindowEvent], Awaitable[Awaitable[Any]]]


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    origin: Origin
    replayed_at: datetime | None = None  # sent again from the DLQ (finsent.dead_letters.REPLAYED_AT_HEADER)


@dataclass
class _Doc:
    record: RawRecord
    raw: RawDocument
    scored: ScoredDocument | None = None


@dataclass
class ScoredBatch:
    """A batch between :meth:`RawBatchPipeline.score` and :meth:`RawBatchPipeline.deliver`."""

    docs: list[_Doc] = field(default_factory=list)  # validated and scored, to index
    # (record, stage, reason) of the records that failed validation or scoring: deliver sends them
    # to the DLQ, again on every retry, as it does everything else.
    rejected: list[tuple[RawRecord, str, str]] = field(default_factory=list)


def text_to_score(doc: RawDocument) -> str:
    """The title carries much of a headline's sentiment: score it with the body."""
    title = (doc.title or "").strip()
    if title and not doc.text.lstrip().startswith(title):
        return f"{title}. {doc.text}"
    return doc.text


def window_events(doc: ScoredDocument, origin: Origin) -> list[WindowEvent]:
    at = doc.published_at or doc.ingested_at
    return [
        WindowEvent(ticker=t, doc_id=doc.id, at=at, label=doc.sentiment.label, score=doc.sentiment.score,
                    confidence=doc.sentiment.confidence, raw_partition=origin.partition, raw_offset=origin.offset)
        for t in dict.fromkeys(doc.tickers)
    ]


class RawBatchPipeline:
    def __init__(self, settings: Settings, holder: ModelHolder, sink: ElasticsearchSink, metrics: WorkerMetrics,
                 *, send_dead_letter: SendDeadLetter, send_scored: SendScored, send_window_event: SendWindowEvent,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.holder = holder
        self.sink = sink
        self.metrics = metrics
        self.send_dead_letter = send_dead_letter
        self.send_scored = send_scored
        self.send_window_event = send_window_event
        self.clock = clock

    async def score(self, records: Sequence[RawRecord]) -> ScoredBatch:
        """Validate and score; a record that fails either is kept for the DLQ (sent by :meth:`deliver`)."""
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        batch = ScoredBatch()
        docs: list[_Doc] = []
        for record in records:
            try:
                docs.append(_Doc(record, parse_raw(record.value, self.settings.max_text_bytes)))
            except RecordError as exc:
                batch.rejected.append((record, "validate", exc.reason))
            except Exception as exc:  # noqa: BLE001 - a validator bug must not make a poison record
                # (the batch would be retried forever); the record is kept whole in the DLQ.
                reason = f"unexpected {type(exc).__name__} while validating: {exc}"
                batch.rejected.append((record, "validate", reason))
        if not docs:
            return batch
        with self.holder.lease() as scorer:
            sentiments = await self._sentiments(scorer, docs)
        scored_at = self.clock()
        for doc, sentiment in zip(docs, sentiments, strict=True):
            if isinstance(sentiment, str):
                batch.rejected.append((doc.record, "score", sentiment))
                continue
            doc.scored = ScoredDocument(**doc.raw.model_dump(), scored_at=scored_at, sentiment=sentiment,
                                        model_version=scorer.version)
            batch.docs.append(doc)
        self.metrics.scored.inc(len(batch.docs))
        return batch

    async def deliver(self, batch: ScoredBatch) -> None:
        """Index the scored documents, produce their messages and dead letters, and wait until the
        broker has all of them. Safe to repeat after a failure: ids make the index writes overwrite."""
        deliveries = [await self._reject(record, stage, reason) for record, stage, reason in batch.rejected]
        if batch.docs:
            indexed_at = self.clock()
            by_id: dict[str, _Doc] = {}
            items = []
            for doc in batch.docs:
                doc.scored.indexed_at = indexed_at
                by_id[doc.scored.id] = doc
                items.append(BulkItem(doc.scored.id, doc.scored.model_dump(mode="json")))
            rejections = await self.sink.index(self.settings.index("docs"), items)
            rejected_ids = set()
            for rejection in rejections:
                rejected_ids.add(rejection.item.id)
                deliveries.append(await self._reject(
                    by_id[rejection.item.id].record, "index",
                    f"Elasticsearch refused the document ({rejection.status}): {rejection.reason}"))
            acked_at = self.clock()
            indexed = [d for d in batch.docs if d.scored.id not in rejected_ids]
            self.metrics.indexed.inc(len(indexed))
            for doc in indexed:
                entered = max(doc.scored.ingested_at, doc.record.replayed_at or doc.scored.ingested_at)
                self.metrics.latency.observe(max(0.0, (acked_at - entered).total_seconds()))
                deliveries.append(await self.send_scored(doc.record.key, doc.scored))
                for event in window_events(doc.scored, doc.record.origin):
                    deliveries.append(await self.send_window_event(event))

        for delivery in deliveries:
            await delivery  # everything on the broker before the caller commits the offsets

    async def _reject(self, record: RawRecord, stage: str, reason: str) -> Awaitable[Any]:
        letter = dead_letter(stage, reason, record.value, record.origin, self.clock())
        delivery = await self.send_dead_letter(record.key, letter)
        self.metrics.dead_letters.labels(stage).inc()
        log.warning("dead letter (%s) %s[%s]@%s: %s", stage, record.origin.topic, record.origin.partition,
                    record.origin.offset, reason)
        return delivery

    async def _sentiments(self, scorer: Scorer, docs: list[_Doc]) -> list[Sentiment | str]:
        """Sentiments in order; a document the model cannot score gets the reason instead."""
        started = time.perf_counter()
        results = await self._score_or_blame(scorer, [text_to_score(d.raw) for d in docs])
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        return results

    async def _score_or_blame(self, scorer: Scorer, texts: list[str]) -> list[Sentiment | str]:
        """Score the texts; if the model fails on them (an error, or its process died on them),
        score each half apart, down to the text that fails on its own, which gets the reason. Halves,
        not one text at a time: a crash under memory pressure passes with a smaller batch, so only a
        text that crashes the model by itself (in two processes: model.scorer_process) is dead-lettered."""
        try:
            results: list[Sentiment | str] = list(await self.holder.score(scorer, texts))
            if len(results) != len(texts):
                raise RuntimeError(f"scorer returned {len(results)} results for {len(texts)} texts")
            return results
        except ScorerCrashed as exc:
            failure = f"model {scorer.version} crashed on it: {exc}"
        except ScorerUnavailable:
            raise  # not the texts' fault: the batch is retried, nothing is dead-lettered
        except Exception as exc:  # noqa: BLE001 - find the document that breaks the model
            failure = f"model {scorer.version} could not score it: {type(exc).__name__}: {exc}"
        if len(texts) == 1:
            return [failure]  # that document goes to the DLQ
        log.warning("scoring %d texts failed (%s); scoring each half apart", len(texts), failure)
        middle = len(texts) // 2
        first = await self._score_or_blame(scorer, texts[:middle])
        return first + await self._score_or_blame(scorer, texts[middle:])
