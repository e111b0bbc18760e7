"""The Kafka side of ingest: raw documents to ``<prefix>.raw``, keyed by primary ticker.

Keyed by the first ticker (else the source) so every document about one ticker lands on one
partition, in order. Each batch waits for the broker's acknowledgement; the caller learns
exactly which documents made it, and only those are remembered by the dedup index. A document
that the client or the broker refuses for what it is (too large, an invalid record) is told
apart from a delivery failure: sending it again would fail forever, so it is that document's
rejection, not the batch's failure. A send that cannot learn the topic's partitions within
``max_block_ms`` (no broker answered since the process started) fails the rest of its batch at
once: a push batch is answered in a minute, not a minute per document. Once the partitions are
known, sends do not block, and a batch in an outage waits out the flush timeout instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from finsent import clients
from finsent.schemas import RawDocument
from finsent.settings import Settings

log = logging.getLogger(__name__)


def message_key(doc: RawDocument) -> bytes:
    return (doc.tickers[0] if doc.tickers else doc.source).encode("utf-8")


def refusal(exc: BaseException | None) -> str | None:
    """The rejection code when ``exc`` refuses one record for good, else None (worth another try)."""
    from kafka import errors

    # Only errors about the record itself: an authorisation or topic error is the whole batch's
    # (and a person's to fix), and dropping every document for it would lose them.
    if isinstance(exc, errors.MessageSizeTooLargeError | errors.RecordListTooLargeError):
        return "too_large"
    if isinstance(exc, errors.InvalidRecordError):  # the broker's validation of this record
        return "refused_by_kafka"
    return None


@dataclass(slots=True)
class Delivery:
    """What became of the documents of one :meth:`KafkaSink.send`; errors are readable strings."""

    acked: list[RawDocument] = field(default_factory=list)
    failed: list[tuple[RawDocument, str]] = field(default_factory=list)  # may succeed if sent again
    refused: list[tuple[RawDocument, str, str]] = field(default_factory=list)  # (document, code, error): never

    def add(self, doc: RawDocument, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        code = refusal(exc)
        if code is None:
            self.failed.append((doc, error))
        else:
            self.refused.append((doc, code, error))


class KafkaSink:
    def __init__(self, settings: Settings, *, flush_timeout: float = 130.0, **producer_overrides) -> None:
        self.settings = settings
        self.topic = settings.topic("raw")
        self.flush_timeout = flush_timeout
        self.producer_overrides = producer_overrides
        self._producer = None

    def start(self) -> None:
        if self._producer is None:
            self._producer = clients.kafka_producer(self.settings, **self.producer_overrides)

    def send(self, docs: list[RawDocument]) -> Delivery:
        """Produce and wait for the broker: which documents it acknowledged, which failed, which it refused."""
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        from kafka.errors import KafkaTimeoutError

        delivery, pending = Delivery(), []
        for index, doc in enumerate(docs):
            try:
                future = self._producer.send(self.topic, key=message_key(doc), value=doc.to_json())
            except KafkaTimeoutError as exc:
                # No metadata within max_block_ms: no broker answers, and each later send would
                # block as long again (a minute a document), so the rest fail now.
                delivery.add(doc, exc)
                for rest in docs[index + 1:]:
                    delivery.failed.append((rest, f"not sent: the send before it timed out ({exc})"))
                break
            except Exception as exc:  # the client refuses this document before sending: too large…
                delivery.add(doc, exc)
                continue
            pending.append((doc, future))
        if pending:
            try:
                self._producer.flush(timeout=self.flush_timeout)
            except Exception as exc:
                log.error("flush to %s did not complete: %s", self.topic, exc)
        for doc, future in pending:
            if not future.is_done:
                delivery.failed.append((doc, f"not acknowledged within {self.flush_timeout}s"))
            elif future.failed():
                delivery.add(doc, future.exception)
            else:
                delivery.acked.append(doc)
        return delivery

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout=self.flush_timeout)
            finally:
                self._producer.close(timeout=10)
                self._producer = None
