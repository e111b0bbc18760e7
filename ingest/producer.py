"""The Kafka side of ingest: raw documents to ``<prefix>.raw``, keyed by primary ticker.

Keyed by the first ticker (else the source) so every document about one ticker lands on one
partition, in order. Each batch waits for the broker's acknowledgement; the caller learns
exactly which documents made it, and only those are remembered by the dedup index.
"""

from __future__ import annotations

import logging

from finsent import clients
from finsent.schemas import RawDocument
from finsent.settings import Settings

log = logging.getLogger(__name__)


def message_key(doc: RawDocument) -> bytes:
    return (doc.tickers[0] if doc.tickers else doc.source).encode("utf-8")


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

    def send(self, docs: list[RawDocument]) -> tuple[list[RawDocument], list[tuple[RawDocument, str]]]:
        """Produce and wait: (acknowledged documents, [(document, error)] for the rest)."""
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        pending, failed = [], []
        for doc in docs:
            try:
                future = self._producer.send(self.topic, key=message_key(doc), value=doc.to_json())
            except Exception as exc:  # the client refuses before sending: too large, no metadata…
                failed.append((doc, f"{type(exc).__name__}: {exc}"))
                continue
            pending.append((doc, future))
        if pending:
            try:
                self._producer.flush(timeout=self.flush_timeout)
            except Exception as exc:
                log.error("flush to %s did not complete: %s", self.topic, exc)
        acked = []
        for doc, future in pending:
            if not future.is_done:
                failed.append((doc, f"not acknowledged within {self.flush_timeout}s"))
            elif future.failed():
                failed.append((doc, f"{type(future.exception).__name__}: {future.exception}"))
            else:
                acked.append(doc)
        return acked, failed

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout=self.flush_timeout)
            finally:
                self._producer.close(timeout=10)
                self._producer = None
