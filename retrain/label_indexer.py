"""Consumes ``<prefix>.labels`` into ``<prefix>-labels``; bad records go to ``<prefix>.dlq``.

Offsets are committed only after Elasticsearch (and the DLQ) took the batch, and a batch that
fails is re-read from its first offset, so a label is never lost; writes are idempotent, so a
re-read never duplicates. Several processes may run it: they share one consumer group.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from finsent.schemas import DeadLetter, LabelRecord, RecordError, original_text, parse_record, utc_now
from finsent.settings import Settings
from retrain.label_intake import future_problem
from retrain.label_store import index_labels

log = logging.getLogger(__name__)

# How long a command waits for its indexer thread to finish its batch and close at exit: a batch
# it leaves unfinished is read again (nothing is lost), but a consumer that does not close leaves
# its partitions to wait out the group's session timeout.
STOP_SECONDS = 15.0


class Drained(NamedTuple):
    """What :meth:`LabelIndexer.run_until_idle` read, and whether it went on until the topic had no more."""

    records: int
    to_the_end: bool


class LabelIndexer:
    def __init__(self, settings: Settings, *, group_id: str | None = None, max_records: int = 500,
                 refresh: bool = False) -> None:
        self.settings = settings
        self.topic = settings.topic("labels")
        self.group_id = group_id or f"{settings.topic_prefix}-labels-indexer"
        self.max_records = max_records
        self.refresh = refresh
        self.indexed = 0
        self.dead = 0
        self._consumer = self._producer = self._es = None

    def start(self) -> LabelIndexer:
        from finsent import clients, topology

        try:
            self._es = clients.elasticsearch(self.settings)
            topology.update_mapping(self._es, self.settings, "labels")  # an upgrade's new fields (indexed_at)
            self._producer = clients.kafka_producer(self.settings)
            self._consumer = clients.kafka_consumer(self.settings, self.topic, group_id=self.group_id,
                                                    max_poll_records=self.max_records)
        except BaseException:
            self.close()  # the background loop starts it again every 10 s while Kafka is away
            raise
        return self

    def poll_once(self, timeout_ms: int = 1000) -> int:
        """Process one batch; returns the records handled. Raises if Elasticsearch is unreachable
        (after rewinding, so the next call re-reads the same records)."""
        batch = self._consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        if not batch:
            return 0
        messages = [m for msgs in batch.values() for m in msgs]
        try:
            self._handle(messages)
        except Exception:
            for tp, msgs in batch.items():
                self._consumer.seek(tp, msgs[0].offset)
            raise
        self._consumer.commit()
        return len(messages)

    def _handle(self, messages: list[Any]) -> None:
        good: list[tuple[Any, LabelRecord]] = []
        dead: list[tuple[Any, str]] = []
        now = utc_now()
        for message in messages:
            try:
                record = parse_record(LabelRecord, message.value or b"", max_bytes=self.settings.label_max_bytes,
                                      ignore_unknown=True)
            except RecordError as exc:
                dead.append((message, exc.reason))
                continue
            # Labels produced straight to the topic skip intake's checks: the time is checked here too.
            if problem := future_problem(record, now):
                dead.append((message, problem))
            else:
                good.append((message, record))
        report = index_labels(self._es, self.settings, [r for _, r in good], refresh=self.refresh, now=now)
        failed_ids = {id(record): reason for record, reason in report.failed}
        dead += [(m, f"elasticsearch refused the label: {failed_ids[id(r)]}") for m, r in good if id(r) in failed_ids]
        for message, reason in dead:
            letter = DeadLetter(stage="labels", reason=reason, original=original_text(message.value or b""),
                                topic=message.topic, partition=message.partition, offset=message.offset,
                                failed_at=utc_now())
            self._producer.send(self.settings.topic("dlq"), value=letter.to_json())
            log.warning("label at %s[%s]@%s to the DLQ: %s", message.topic, message.partition, message.offset, reason)
        if dead:
            self._producer.flush(timeout=30)
        self.indexed += report.indexed
        self.dead += len(dead)

    def run(self, stop: threading.Event, *, backoff_max: float = 30.0) -> None:
        """Loop until ``stop`` is set; Elasticsearch or Kafka outages are retried with backoff."""
        delay = 1.0
        while not stop.is_set():
            try:
                self.poll_once(timeout_ms=1000)
                delay = 1.0
            except Exception as exc:  # keep the process alive; the batch is re-read
                log.error("label indexing failed, retrying in %.0fs: %s", delay, exc)
                stop.wait(delay)
                delay = min(backoff_max, delay * 2)

    def run_until_idle(self, *, idle_polls: int = 2, deadline_s: float = 60.0,
                       stopped: Callable[[], bool] = lambda: False) -> Drained:
        """Drain what is in the topic now (CLI ``labels index --once`` and tests); ``stopped()`` true ends it after
        the batch under way, indexed and committed."""
        total, idle, end = 0, 0, time.monotonic() + deadline_s
        while idle < idle_polls and time.monotonic() < end and not stopped():
            n = self.poll_once(timeout_ms=1000)
            total += n
            idle = idle + 1 if n == 0 else 0
        return Drained(total, idle >= idle_polls)

    def close(self) -> None:
        # A producer's close waits without end by default (Kafka away), and raises when its flush times
        # out. Letters it still holds belong to a batch whose offsets were not committed: that batch is
        # read again, and its letters written again.
        for name, kwargs in (("_consumer", {}), ("_producer", {"timeout": 5}), ("_es", {})):
            client = getattr(self, name)
            if client is None:
                continue
            setattr(self, name, None)
            try:
                client.close(**kwargs)
            except Exception as exc:  # noqa: BLE001 - the other clients still close
                log.warning("label indexer: closing its %s failed: %s: %s", name.strip("_"), type(exc).__name__, exc)

    def __enter__(self) -> LabelIndexer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def indexing_in_background(settings: Settings, enabled: bool = True) -> Iterator[None]:
    """Index labels in a daemon thread while the block runs (the scheduler and the labels server use
    it); after the block, stop it and wait up to :data:`STOP_SECONDS` for it to close its clients.

    An indexer still connecting (Kafka away: its bootstrap blocks for 30 s) has no consumer to close and is not
    waited for: a stop then waited the whole 15 s."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    running = threading.Event()

    def target() -> None:
        while not stop.is_set():
            try:
                with LabelIndexer(settings) as indexer:
                    running.set()  # cleared once its clients closed
                    indexer.run(stop)
            except Exception as exc:  # e.g. Kafka down at start: try again later
                log.error("label indexer could not start: %s", exc)
                stop.wait(10)
            finally:
                running.clear()

    thread = threading.Thread(target=target, name="label-indexer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        if running.is_set():
            thread.join(STOP_SECONDS)
