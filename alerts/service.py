"""The alert engine process: Kafka in, outbox, webhooks, Elasticsearch and Kafka out.

Two threads share one :class:`~alerts.outbox.Outbox` (and the dispatcher's webhook workers):

* the consumer (``poll_once``) reads ``aggregates``, ``scored`` and ``control`` in its own
  group ``<prefix>-alerts``, evaluates the rules and writes new alerts to the outbox, and only
  then commits its offsets (a crash replays input; the idempotency key drops the repeats);
* the dispatcher (``deliver_due`` + ``sync``) hands due deliveries to a worker thread per webhook
  (:class:`~alerts.delivery.Dispatcher`) and mirrors every alert's state to the ``alerts`` index
  (``_id`` = idempotency key) and the ``alerts`` topic (keyed by it, so a compacted topic keeps
  each alert's latest state).

A receiver outage therefore never blocks consumption, and Elasticsearch or Kafka being away
only delays the mirror: the outbox keeps each change until it is written. An alert the index
refuses for what it is (a mapping conflict) is given up after a few tries, with the reason kept
in the outbox, instead of being retried ahead of the newer ones for ever. A row whose stored alert this release
cannot read is given up by the outbox (:mod:`alerts.outbox`) and counted in ``engine_errors{stage="outbox"}``; every
other row goes on as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from alerts.delivery import Dispatcher
from alerts.engine import Clock, RuleEngine
from alerts.metrics import AlertMetrics
from alerts.outbox import AlertRow, Outbox
from alerts.rules import NegativeBurstRule, RulesFile, SentimentShiftRule
from alerts.window_history import read_history
from finsent import clients, topology
from finsent.durations import parse_duration
from finsent.schemas import (
    IGNORE_UNKNOWN,
    Aggregate,
    Alert,
    AlertDocument,
    ControlMessage,
    DeadLetter,
    RecordError,
    ScoredDocument,
    original_text,
    parse_record,
    utc_now,
)
from finsent.settings import Settings

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0  # how often the dispatch loop applies alerts_retention_days to the outbox
# A row the alerts index refuses waits before its next try (doubling from SYNC_RETRY_S up to SYNC_RETRY_MAX_S), so
# that newer rows go first; refused for what it is (a 4xx but 429: a mapping conflict, a parsing error) it is given
# up at its SYNC_GIVE_UP_AFTER-th refusal. Elasticsearch being away (no answer, 429, 5xx) gives up nothing.
SYNC_RETRY_S = 5.0
SYNC_RETRY_MAX_S = 600.0
SYNC_GIVE_UP_AFTER = 3
INPUTS = {"aggregates": Aggregate, "scored": ScoredDocument, "control": ControlMessage}


class AlertsConfigError(ValueError):
    """The engine cannot start with this configuration; the message says what to set."""


def negatives_query(rules: RulesFile, now: datetime) -> dict[str, Any] | None:
    """The documents a burst under way at a restart may still count: confident negatives dated within the
    longest ``within`` of the enabled negative_burst rules (None without one). The engine checks each rule's
    own confidence, tickers and span."""
    bursts = [rule for rule in rules.enabled_rules() if isinstance(rule, NegativeBurstRule)]
    if not bursts:
        return None
    since = (now - max(rule.within for rule in bursts)).isoformat()
    return {"bool": {"filter": [
        {"term": {"sentiment.label": "negative"}},
        {"range": {"sentiment.confidence": {"gte": min(rule.min_confidence for rule in bursts)}}},
        {"bool": {"should": [{"range": {field: {"gte": since}}} for field in ("published_at", "ingested_at")],
                  "minimum_should_match": 1}},
    ]}}


def read_negatives(es: Any, index: str, rules: RulesFile, now: datetime) -> Iterator[ScoredDocument]:
    """The documents of :func:`negatives_query`, as alerts.window_history.read_history reads aggregates; one
    that is not a valid scored document is skipped with a warning that names it."""
    from elasticsearch import helpers

    query = negatives_query(rules, now)
    if query is None:
        return
    body = {"query": query, "sort": [{"scored_at": "asc"}]}
    for hit in helpers.scan(es, index=index, query=body, preserve_order=True, size=2000, ignore_unavailable=True):
        try:
            yield ScoredDocument.model_validate(hit["_source"], context=IGNORE_UNKNOWN)
        except ValidationError as exc:
            log.warning("document %s in %s is not valid, left out of the bursts under way: %s", hit.get("_id"),
                        index, exc.errors(include_url=False)[:3])


def outbox_path(settings: Settings) -> Path:
    return (settings.alerts_outbox or settings.state_dir / "alerts" / "outbox.sqlite3").resolve()


def consumer_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}-alerts"


def webhook_secret(settings: Settings, rules: RulesFile) -> str:
    """The shared secret, for the webhooks without a ``secret`` of their own ("" when none needs it)."""
    if settings.alerts_webhook_secret is None or not settings.alerts_webhook_secret.get_secret_value():
        if unsigned := sorted(name for name, hook in rules.webhooks.items() if hook.secret is None):
            raise AlertsConfigError(
                f"FINSENT_ALERTS_WEBHOOK_SECRET is not set and webhook(s) {', '.join(unsigned)} have no secret of "
                "their own: webhooks are always signed "
                "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        return ""
    return settings.alerts_webhook_secret.get_secret_value()


class AlertService:
    def __init__(self, settings: Settings, rules: RulesFile, *, registry: CollectorRegistry,
                 clock: Clock | None = None, wall: Callable[[], float] = time.time,
                 consumer_overrides: dict | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = AlertMetrics(registry)
        self.metrics.declare(rules.webhooks, [(rule.name, rule.kind) for rule in rules.enabled_rules()], INPUTS)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.wall = wall
        self.consumer_overrides = consumer_overrides or {}
        self.secret = webhook_secret(settings, rules)  # fail before connecting to anything
        self.outbox = Outbox(outbox_path(settings), on_unreadable=self._unreadable)
        self.engine: RuleEngine | None = None
        self.dispatcher: Dispatcher | None = None
        self._consumer = self._producer = self._es = None
        self._wake = threading.Event()
        self._sync_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> AlertService:
        self.outbox.start()
        self.engine = RuleEngine(self.rules, clock=self.clock, dashboard_template=self.settings.alerts_dashboard_url,
                                 stream_min_baseline=self.settings.window_min_baseline)
        self.engine.restore(self.outbox.last_fired(), self.outbox.recent_keys())
        self.dispatcher = Dispatcher(self.outbox, self.rules.webhooks, self.secret, self.metrics, clock=self.wall,
                                     on_dead=self._dead_letter).start()
        self._producer = clients.kafka_producer(self.settings)
        self._es = clients.elasticsearch(self.settings)
        topology.update_mapping(self._es, self.settings, "alerts")  # an upgrade's new fields (z) before a sync
        self._warm_up()
        topics = [self.settings.topic(name) for name in INPUTS]
        self._consumer = clients.kafka_consumer(
            self.settings, *topics,
            **({"group_id": consumer_group(self.settings), "auto_offset_reset": self.settings.alerts_offset_reset,
                "enable_auto_commit": False, "max_poll_records": 500} | self.consumer_overrides),
        )
        self._topic_kinds = {self.settings.topic(name): name for name in INPUTS}
        self._update_pending()
        return self

    def _warm_up(self) -> None:
        """Each window series' recent past from the aggregates index (alerts.window_history), and the bursts
        under way from the docs index: the consumer resumes after the documents they hold so far."""
        index = self.settings.index("aggregates")
        try:
            taken = self.engine.warm(read_history(self._es, index, self.settings.windows, self.clock()))
        except Exception as exc:  # noqa: BLE001 - the rules still work; those with min_history wait for windows
            log.warning("could not read the window history from %s (%s: %s); rules with min_history wait for new "
                        "windows", index, type(exc).__name__, exc)
        else:
            log.info("window history: %d aggregates from %s, %d tickers", taken, index, self.engine.tracked_tickers)
        index = self.settings.index("docs")
        try:
            kept = self.engine.warm_bursts(read_negatives(self._es, index, self.rules, self.clock()))
        except Exception as exc:  # noqa: BLE001 - a burst under way then counts only what comes next
            log.warning("could not read the recent negatives from %s (%s: %s); bursts start afresh", index,
                        type(exc).__name__, exc)
            return
        log.info("bursts under way: %d negatives from %s", kept, index)

    def close(self) -> None:
        for closer in (
            lambda: self._consumer and self._consumer.close(autocommit=False),
            lambda: self.dispatcher and self.dispatcher.close(),
            lambda: self._producer and (self._producer.flush(10), self._producer.close(10)),
            lambda: self._es and self._es.close(),
            self.outbox.close,
        ):
            try:
                closer()
            except Exception:  # closing is best effort; the outbox already holds everything
                log.exception("error while closing the alert engine")
        self._consumer = self._producer = self._es = None

    def __enter__(self) -> AlertService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- consuming -----------------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 500) -> list[Alert]:
        """Consume one batch, store the alerts it raises, then commit; returns the new alerts."""
        batch = self._consumer.poll(timeout_ms=timeout_ms)
        new: list[Alert] = []
        for tp, records in batch.items():
            for record in records:
                for alert in self.handle(tp.topic, record.value, partition=tp.partition, offset=record.offset):
                    if self._store(alert):
                        new.append(alert)
        if batch:
            self._producer.flush(30)  # dead letters of bad records are written before we move on
            try:
                self._consumer.commit()
            except Exception as exc:  # e.g. a rebalance: the records come again, and the outbox drops repeats
                log.warning("offset commit failed (records will be read again): %s", exc)
        if new:
            self._wake.set()
        return new

    def handle(self, topic: str, value: bytes | None, *, partition: int | None = None,
               offset: int | None = None) -> list[Alert]:
        kind = self._topic_kinds.get(topic)
        if kind is None:
            return []
        try:
            record = parse_record(INPUTS[kind], value or b"", ignore_unknown=True)  # the worker may be newer
        except RecordError as exc:
            self.metrics.bad_records.labels(kind).inc()
            log.warning("bad record on %s[%s]@%s: %s", topic, partition, offset, exc.reason)
            self._send_dead_letter(DeadLetter(stage="alerts.input", reason=exc.reason,
                                              original=original_text(value or b""), topic=topic,
                                              partition=partition, offset=offset, failed_at=utc_now()))
            return []
        before = self.engine.stats.suppressed()
        try:
            if kind == "aggregates":
                alerts = self.engine.on_aggregate(record)
            elif kind == "scored":
                alerts = self.engine.on_scored(record)
            else:
                alerts = self.engine.on_control(record)
        except Exception as exc:  # a rule bug must not stop every other rule: keep the record, go on
            log.exception("rules failed on %s[%s]@%s", topic, partition, offset)
            self.metrics.engine_errors.labels("rules").inc()
            self._send_dead_letter(DeadLetter(stage="alerts.rules", reason=f"{type(exc).__name__}: {exc}"[:8192],
                                              original=original_text(value or b""), topic=topic,
                                              partition=partition, offset=offset, failed_at=utc_now()))
            return []
        for reason, count in self.engine.stats.suppressed().items():
            self.metrics.suppressed.labels(reason).inc(count - before[reason])
        return alerts

    def _store(self, alert: Alert) -> bool:
        alert = self._enrich(alert)
        rule = next(r for r in self.rules.rules if r.name == alert.rule)
        if not self.outbox.enqueue(alert, self.rules.webhooks_of(rule), self.wall()):
            return False  # raised before a restart: already in the outbox
        self.metrics.raised.labels(alert.rule, alert.kind).inc()
        self._update_pending()
        log.info("alert %s raised by %s: %s", alert.idempotency_key, alert.rule, alert.message)
        return True

    def _enrich(self, alert: Alert) -> Alert:
        """Fill the top documents of a sentiment shift from the docs index when the engine's own
        buffer had none (after a restart, or when aggregates overtook the scored documents)."""
        rule = next((r for r in self.rules.rules if r.name == alert.rule), None)
        if alert.documents or not isinstance(rule, SentimentShiftRule) or not rule.top_documents:
            return alert
        if alert.ticker is None or alert.window_start is None:
            return alert
        # The direction of the z-score that raised it (every shift the engine raises carries it): a fall from a high
        # baseline can leave a mean score above 0, and with no baseline of the engine's own (the z from the stream)
        # value and baseline cannot tell.
        falling = alert.z is not None and alert.z < 0
        agg_end = alert.window_start + parse_duration(alert.window or 0)
        try:
            found = self._es.search(
                index=self.settings.index("docs"), size=rule.top_documents,
                query={"bool": {"filter": [
                    {"term": {"tickers": alert.ticker}},
                    {"bool": {"should": [
                        {"range": {field: {"gte": alert.window_start.isoformat(), "lt": agg_end.isoformat()}}}
                        for field in ("published_at", "ingested_at", "scored_at")
                    ], "minimum_should_match": 1}},
                ]}},
                sort=[{"sentiment.score": {"order": "asc" if falling else "desc"}}],
                source_includes=["id", "title", "url", "sentiment.score"],
            )
        except Exception as exc:  # the alert is still worth sending without its documents
            log.warning("could not look up documents for alert %s: %s", alert.idempotency_key, exc)
            return alert
        docs = [AlertDocument(id=h["_source"].get("id", h["_id"]), title=h["_source"].get("title"),
                              url=h["_source"].get("url"), score=h["_source"]["sentiment"]["score"])
                for h in found["hits"]["hits"]]
        return alert.model_copy(update={"documents": docs})

    # --- delivering and mirroring ---------------------------------------------------------------
    def deliver_due(self, should_stop: Callable[[], bool] | None = None) -> int:
        attempts = self.dispatcher.deliver_due(should_stop=should_stop)
        if attempts:
            self._update_pending()
        return attempts

    def sync(self) -> int:
        """Mirror changed alerts to Elasticsearch and the alerts topic; returns how many."""
        with self._sync_lock:
            rows = self.outbox.unsynced(self.wall())
            if not rows:
                return 0
            try:
                actions = []
                for row in rows:
                    target = {"_index": self.settings.index("alerts"), "_id": row.alert.idempotency_key}
                    actions.append({"index": target})
                    actions.append(row.document())
                result = self._es.bulk(operations=actions, refresh="wait_for")
            except Exception as exc:
                self.metrics.sync_errors.labels("elasticsearch").inc()
                log.warning("alerts index not updated (will retry): %s", exc)
                return 0
            by_key = {row.alert.idempotency_key: row for row in rows}
            indexed = {item["index"]["_id"] for item in result["items"] if item["index"].get("status", 500) < 300}
            for item in result["items"]:
                if item["index"].get("status", 500) >= 300:
                    self._refused(by_key[item["index"]["_id"]], item["index"])
            try:
                for row in rows:
                    if row.alert.idempotency_key in indexed:
                        self._producer.send(self.settings.topic("alerts"), key=row.alert.idempotency_key.encode(),
                                            value=row.alert.to_json())
                self._producer.flush(30)
            except Exception as exc:
                self.metrics.sync_errors.labels("kafka").inc()
                log.warning("alerts topic not updated (will retry): %s", exc)
                return 0
            for row in rows:
                if row.alert.idempotency_key in indexed:
                    self.outbox.mark_synced(row.alert.idempotency_key, row.version)
            return len(indexed)

    def _refused(self, row: AlertRow, answer: dict) -> None:
        """The alerts index refused a row: try it again after a backoff, or give it up (see SYNC_GIVE_UP_AFTER)."""
        self.metrics.sync_errors.labels("elasticsearch").inc()
        key, status = row.alert.idempotency_key, answer.get("status", 500)
        error = f"alerts index answered {status}: {answer.get('error')}"[:2000]
        tries = row.sync_attempts + 1
        if 400 <= status < 500 and status != 429 and tries >= SYNC_GIVE_UP_AFTER:
            log.error("alert %s given up by the mirror after %d refusals, it stays out of the alerts index and "
                      "topic: %s", key, tries, error)
            self.outbox.record_sync_failure(key, row.version, error, retry_at=None)
            self.metrics.sync_given_up.inc()
            return
        delay = min(SYNC_RETRY_S * 2 ** (tries - 1), SYNC_RETRY_MAX_S)
        log.error("alert %s not indexed (try %d, next in %.0f s): %s", key, tries, delay, error)
        self.outbox.record_sync_failure(key, row.version, error, retry_at=self.wall() + delay)

    def prune_outbox(self) -> int:
        """Delivered, mirrored alerts older than ``alerts_retention_days`` leave the outbox (the index keeps them)."""
        days = self.settings.alerts_retention_days
        if not days:
            return 0
        pruned = self.outbox.prune(self.clock() - timedelta(days=days))
        if pruned:
            log.info("removed %d alert(s) older than %g days from the outbox", pruned, days)
        return pruned

    def _unreadable(self, key: str, reason: str) -> None:
        """An outbox row this release cannot read was given up (the outbox logged it with the reason)."""
        self.metrics.engine_errors.labels("outbox").inc()

    def _dead_letter(self, alert: Alert, webhook: str, error: str) -> None:
        self._send_dead_letter(DeadLetter(stage="alerts.delivery", reason=f"webhook {webhook}: {error}"[:8192],
                                          original=alert.model_dump_json(), failed_at=utc_now()))

    def _send_dead_letter(self, letter: DeadLetter) -> None:
        try:
            self._producer.send(self.settings.topic("dlq"), value=letter.to_json())
        except Exception:  # the outbox row (status failed) remains the record of it
            log.exception("could not produce a dead letter")

    def _update_pending(self) -> None:
        self.metrics.pending.set(self.outbox.counts().get("pending", 0))

    # --- the process -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, with deliveries and the mirror in a second thread.

        An error outside a single record (the outbox cannot be written, say) ends the run
        without committing: the process exits non-zero, and its restart resumes from the last
        committed offsets with the outbox intact.
        """
        worker = threading.Thread(target=self._dispatch_loop, args=(stop,), name="alerts-dispatch", daemon=True)
        worker.start()
        try:
            while not stop.is_set():
                self.poll_once(timeout_ms=500)
        finally:
            stop.set()
            self._wake.set()
            worker.join(timeout=60)
            try:
                self.sync()  # the last delivery results reach the index before we exit
            except Exception:
                log.exception("final sync failed; the outbox keeps the changes for the next start")

    def _dispatch_loop(self, stop: threading.Event) -> None:
        next_prune = time.monotonic()
        while not stop.is_set():
            try:
                self.deliver_due(should_stop=stop.is_set)  # a pass of slow answers must not hold the exit
                self.sync()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    self.prune_outbox()
                next_due = self.outbox.next_due()
            except Exception:  # keep delivering: one bad pass must not stop the engine
                log.exception("delivery pass failed")
                self.metrics.engine_errors.labels("dispatch").inc()
                next_due = None
            wait = 1.0 if next_due is None else min(1.0, max(0.0, next_due - self.wall()))
            self._wake.wait(wait)
            self._wake.clear()
