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
from typing import Any

from finsent.schemas import DeadLetter, LabelRecord, RecordError, original_text, parse_record, utc_now
from finsent.settings import Settings
from retrain.drain_progress import DrainProgress, Drained, DrainTarget
from retrain.label_intake import future_problem
from retrain.label_store import index_labels

log = logging.getLogger(__name__)

# A drain's requests for offsets while Kafka is away fail after this (kafka-python waits without end by default).
OFFSETS_TIMEOUT_MS = 10_000
# A drain retries a failed batch after 1 s, then twice as long each time, up to this.
DRAIN_BACKOFF_MAX_S = 15.0

# How long a command waits for its indexer thread to finish its batch and close at exit: a batch
# it leaves unfinished is read again (nothing is lost), but a consumer that does not close leaves
# its partitions to wait out the group's session timeout.
STOP_SECONDS = 15.0


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
        """Process one batch; returns the records handled. Raises if Elasticsearch is unreachable or Kafka takes no
        commit (after rewinding, so the next call re-reads the same records)."""
        batch = self._consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        if not batch:
            return 0
        messages = [m for msgs in batch.values() for m in msgs]
        try:
            self._handle(messages)
            self._consumer.commit()
        except Exception:
            self._rewind(batch)
            raise
        return len(messages)

    def _rewind(self, batch: dict[Any, list[Any]]) -> None:
        # A batch indexed but not committed is read again too: a drain that went on past it would wait for its commit
        # in vain. A partition the group took away meanwhile (a rebalance fails the commit) goes on from its commit.
        assigned = self._consumer.assignment()
        for tp, msgs in batch.items():
            if tp in assigned:
                self._consumer.seek(tp, msgs[0].offset)

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

    def drain(self, stop: threading.Event, *, stall_s: float, clock: Callable[[], float] = time.monotonic) -> Drained:
        """Index and commit every record the topic held when it began (CLI ``labels index --once``, tests): up to the
        end offsets its partitions had then, reached when the group's committed offsets are there, whichever member
        read them; records produced since may be read too. A failure (Elasticsearch, Kafka away) is retried, the
        batch read again, until ``stall_s`` seconds went by without the records left falling; a set ``stop`` ends it
        after the batch under way, indexed and committed."""
        progress = DrainProgress(stall_s, clock)
        target: DrainTarget | None = None
        delay = 1.0
        while not stop.is_set():
            try:
                target = target or self._drain_target()
                progress.saw(target.left(self._committed(target)))
                if progress.left == 0 or progress.stalled():
                    break
                progress.read(self.poll_once(timeout_ms=1000))
                delay = 1.0
            except Exception as exc:  # the batch is read again; Kafka or Elasticsearch may be back soon
                from finsent.clients import error_text

                progress.failed(error_text(exc))
                if progress.stalled():
                    break
                log.error("label indexing failed, retrying in %.0fs: %s", min(delay, progress.seconds_left()), exc)
                stop.wait(min(delay, progress.seconds_left()))
                delay = min(DRAIN_BACKOFF_MAX_S, delay * 2)
        return progress.drained()

    def _drain_target(self) -> DrainTarget:
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise RuntimeError(f"no partitions known for topic {self.topic}")
        from kafka import TopicPartition

        tps = [TopicPartition(self.topic, number) for number in sorted(partitions)]
        return DrainTarget(self._consumer.end_offsets(tps, timeout_ms=OFFSETS_TIMEOUT_MS),
                           self._consumer.beginning_offsets(tps, timeout_ms=OFFSETS_TIMEOUT_MS))

    def _committed(self, target: DrainTarget) -> dict[Any, int | None]:
        """The group's committed offsets, as Kafka has them (those of partitions another member reads too)."""
        return {tp: self._consumer.committed(tp, timeout_ms=OFFSETS_TIMEOUT_MS) for tp in target.ends}

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
