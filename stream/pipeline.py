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
from stream.blamed_texts import BlamedTexts
from stream.es_sink import BulkItem, ElasticsearchSink
from stream.metrics import WorkerMetrics
from stream.model_holder import ModelHolder, Scorer
from stream.validation import Origin, dead_letter, letter_room, message_overhead, parse_raw
from stream.windows import WindowEvent

log = logging.getLogger(__name__)

# Each returns an awaitable that completes when the broker has the message.
SendDeadLetter = Callable[[bytes | None, DeadLetter], Awaitable[Awaitable[Any]]]
SendScored = Callable[[bytes | None, ScoredDocument], Awaitable[Awaitable[Any]]]
SendWindowEvent = Callable[[WindowEvent], Awaitable[Awaitable[Any]]]

# Scored when a batch fails, to tell a model that fails on anything (a sticky CUDA error, a broken ONNX
# session) from texts that break it: only the latter may be dead-lettered.
PROBE_TEXT = "The company reported its quarterly results on Tuesday."


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    origin: Origin
    replayed_at: datetime | None = None  # sent again from the DLQ (finsent.dead_letters.REPLAYED_AT_HEADER)


@dataclass(frozen=True)
class _Failure:
    """Why the model failed on some texts; ``hung``: its scorer process went silent and was killed."""

    reason: str
    hung: bool = False


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
                 clock: Callable[[], datetime] = utc_now, max_message_bytes: int | None = None) -> None:
        self.settings = settings
        self.holder = holder
        self.sink = sink
        self.metrics = metrics
        self.send_dead_letter = send_dead_letter
        self.send_scored = send_scored
        self.send_window_event = send_window_event
        self.clock = clock
        # The producer's largest message (its max_request_size): a larger one is refused every time it is sent.
        self.max_message_bytes = max_message_bytes
        self.blamed = BlamedTexts()

    async def score(self, records: Sequence[RawRecord]) -> ScoredBatch:
        """Validate and score; a record that fails either is kept for the DLQ (sent by :meth:`deliver`)."""
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        batch = ScoredBatch()
        docs: list[_Doc] = []
        now = self.clock()
        for record in records:
            try:
                docs.append(_Doc(record, parse_raw(record.value, self.settings.max_text_bytes, now)))
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
        letters = list(batch.rejected)
        indexed: list[_Doc] = []
        deliveries = []
        if batch.docs:
            indexed_at = self.clock()
            by_id: dict[str, list[_Doc]] = {}  # id → the batch's records of it, in order
            for doc in batch.docs:
                doc.scored.indexed_at = indexed_at
                too_big = self._too_big(doc)
                if too_big:  # neither indexed nor produced (the producer refuses it, for ever): dead-lettered
                    letters.append((doc.record, "produce", too_big))
                    continue
                # Moved to the end, so ids follow their last record: window events then keep each
                # partition's offsets rising (TickerWindows takes a lower offset for a re-delivery).
                by_id[doc.scored.id] = by_id.pop(doc.scored.id, []) + [doc]
            # One bulk item per id, its last record (as a later batch's would overwrite it); the outcome
            # is every copy's: all dead-lettered, or the last one produced and counted once.
            items = [BulkItem(id_, copies[-1].scored.model_dump(mode="json")) for id_, copies in by_id.items()]
            rejections = await self.sink.index(self.settings.index("docs"), items)
            for rejection in rejections:
                reason = f"Elasticsearch refused the document ({rejection.status}): {rejection.reason}"
                letters += [(doc.record, "index", reason) for doc in by_id.pop(rejection.item.id)]
            acked_at = self.clock()
            indexed = [copies[-1] for copies in by_id.values()]
            for doc in indexed:
                deliveries.append(await self.send_scored(doc.record.key, doc.scored))
                for event in window_events(doc.scored, doc.record.origin):
                    deliveries.append(await self.send_window_event(event))
        for record, stage, reason in letters:
            deliveries.append(await self._reject(record, stage, reason))

        for delivery in deliveries:
            await delivery  # everything on the broker before the caller commits the offsets
        # Counted once the broker has everything: a delivery that fails is retried whole.
        for record, stage, reason in letters:
            self.metrics.dead_letters.labels(stage).inc()
            log.warning("dead letter (%s) %s[%s]@%s: %s", stage, record.origin.topic, record.origin.partition,
                        record.origin.offset, reason)
        self.metrics.indexed.inc(len(indexed))
        for doc in indexed:
            entered = max(doc.scored.ingested_at, doc.record.replayed_at or doc.scored.ingested_at)
            self.metrics.latency.observe(max(0.0, (acked_at - entered).total_seconds()))

    def _too_big(self, doc: _Doc) -> str | None:
        """Why the document's scored message cannot be produced, if it cannot (a raw record near the
        producer's limit grows by the sentiment and times)."""
        if self.max_message_bytes is None:
            return None
        size = len(doc.scored.to_json()) + message_overhead(doc.record.key)
        if size <= self.max_message_bytes:
            return None
        return (f"the scored message is {size} bytes, over the producer's largest message of "
                f"{self.max_message_bytes} bytes (FINSENT_MAX_TEXT_BYTES leaves it no room)")

    async def _reject(self, record: RawRecord, stage: str, reason: str) -> Awaitable[Any]:
        key, max_bytes = record.key, None
        if self.max_message_bytes is not None:
            key, max_bytes = letter_room(key, self.max_message_bytes)
        letter = dead_letter(stage, reason, record.value, record.origin, self.clock(), max_bytes=max_bytes)
        return await self.send_dead_letter(key, letter)

    async def _sentiments(self, scorer: Scorer, docs: list[_Doc]) -> list[Sentiment | str]:
        """Sentiments in order; a document the model cannot score gets the reason instead. A text
        this model failed on before is not scored again (:mod:`stream.blamed_texts`)."""
        texts = [text_to_score(d.raw) for d in docs]
        known = [self.blamed.reason(scorer.version, text) for text in texts]
        fresh = [text for text, reason in zip(texts, known) if reason is None]
        scored = iter([])
        if fresh:
            started = time.perf_counter()
            scored = iter(await self._score_or_blame(scorer, fresh))
            self.metrics.inference_seconds.observe(time.perf_counter() - started)
        results: list[Sentiment | str] = []
        for text, reason in zip(texts, known):
            if reason is not None:
                results.append(f"{reason} (the same text before; not scored again)")
                continue
            result = next(scored)
            if isinstance(result, str):
                self.blamed.remember(scorer.version, text, result)
            results.append(result)
        return results

    async def _score_or_blame(self, scorer: Scorer, texts: list[str]) -> list[Sentiment | str]:
        """Score the texts; if the model fails on them (an error, or its process died on them),
        score each half apart, down to the text that fails on its own, which gets the reason. Halves,
        not one text at a time: a crash under memory pressure passes with a smaller batch, so only a
        text that crashes the model by itself (in two processes: model.scorer_process) is dead-lettered.
        A batch its process hung on is the exception: each halving would wait out the silence limit
        again, so its texts are scored one by one, and only a text that hangs the model costs that.

        A model that fails on a known-good text too is broken, not the texts: an error can leave a
        process unable to score (a CUDA error poisons its GPU context). Before the split, and before
        a text is blamed, the model must score a known-good text, in a new scorer process if need be;
        where it cannot, ScorerUnavailable holds the batch, as when the scorer is gone."""
        outcome = await self._attempt(scorer, texts)
        if not isinstance(outcome, _Failure):
            return outcome
        if len(texts) > 1:  # a single text goes straight to _blame, which checks the model itself
            await self._ensure_working(scorer, outcome)
        return await self._split(scorer, texts, outcome)

    async def _split(self, scorer: Scorer, texts: list[str], failure: _Failure) -> list[Sentiment | str]:
        """Sentiments of texts the model failed on together (``failure``), scored in parts: halves, or
        one by one after a hang."""
        if len(texts) == 1:
            return [await self._blame(scorer, texts[0], failure)]
        if failure.hung:
            log.warning("scoring %d texts hung (%s); scoring each alone", len(texts), failure.reason)
            parts = [[text] for text in texts]
        else:
            log.warning("scoring %d texts failed (%s); scoring each half apart", len(texts), failure.reason)
            middle = len(texts) // 2
            parts = [texts[:middle], texts[middle:]]
        results: list[Sentiment | str] = []
        for part in parts:
            outcome = await self._attempt(scorer, part)
            results += await self._split(scorer, part, outcome) if isinstance(outcome, _Failure) else outcome
        return results

    async def _blame(self, scorer: Scorer, text: str, failure: _Failure) -> Sentiment | str:
        """The reason a text fails on its own (it goes to the DLQ), unless it was the model that had
        broken, on an earlier text say: then the text's sentiment from a new scorer process."""
        if await self._ensure_working(scorer, failure):
            return failure.reason
        outcome = await self._attempt(scorer, [text])
        if not isinstance(outcome, _Failure):
            return outcome[0]
        await self._ensure_working(scorer, outcome)  # a text that breaks every process it reaches: the rest go on
        return outcome.reason

    async def _attempt(self, scorer: Scorer, texts: list[str]) -> list[Sentiment] | _Failure:
        """The texts' sentiments, or why the model failed on them."""
        try:
            results = list(await self.holder.score(scorer, texts))
            if len(results) != len(texts):
                raise RuntimeError(f"scorer returned {len(results)} results for {len(texts)} texts")
            return results
        except ScorerCrashed as exc:
            return _Failure(f"model {scorer.version} crashed on it: {exc}", hung=exc.hung)
        except ScorerUnavailable:
            raise  # not the texts' fault: the batch is retried, nothing is dead-lettered
        except Exception as exc:  # noqa: BLE001 - find the document that breaks the model
            return _Failure(f"model {scorer.version} could not score it: {type(exc).__name__}: {exc}")

    async def _ensure_working(self, scorer: Scorer, failure: _Failure) -> bool:
        """True if the model scores a known-good text; False if it does once its scorer process was
        started again; ScorerUnavailable if it does not (or runs in this process, which cannot be)."""
        probe = await self._attempt(scorer, [PROBE_TEXT])
        if not isinstance(probe, _Failure):
            return True
        if await self.holder.renew(scorer):
            log.warning("model %s fails on a known-good text too (%s); its scorer process was started again",
                        scorer.version, probe.reason)
            probe = await self._attempt(scorer, [PROBE_TEXT])
            if not isinstance(probe, _Failure):
                return False
        raise ScorerUnavailable(f"model {scorer.version} fails on a known-good text too ({probe.reason}); holding "
                                f"the batch instead of dead-lettering its documents (their failure: {failure.reason})")
