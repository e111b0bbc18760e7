"""Prometheus metrics of the alert engine, created against an injected registry."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alerts.engine import SUPPRESSED

# Outcomes of finsent_alerts_attempts_total (alerts/delivery.py).
OUTCOMES = ("delivered", "retry", "error", "rejected", "unconfigured")
# Stages of finsent_alerts_engine_errors_total (alerts/service.py).
ENGINE_STAGES = ("rules", "dispatch", "outbox")


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.raised = Counter("finsent_alerts_raised_total", "Alerts raised by rules (after dedup and cooldown)",
                              ["rule", "kind"], registry=registry)
        self.suppressed = Counter("finsent_alerts_suppressed_total", "Rule hits suppressed",
                                  ["reason"], registry=registry)
        self.sent = Counter("finsent_alerts_sent_total", "Webhook deliveries acknowledged with 2xx",
                            ["webhook"], registry=registry)
        self.failed = Counter("finsent_alerts_failed_total", "Webhook deliveries dead-lettered after the last attempt",
                              ["webhook"], registry=registry)
        self.attempts = Counter("finsent_alerts_attempts_total", "Webhook delivery attempts by outcome",
                                ["webhook", "outcome"], registry=registry)
        self.latency = Histogram("finsent_alerts_delivery_latency_seconds", "HTTP round trip of one attempt",
                                 ["webhook"], registry=registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.end_to_end = Histogram("finsent_alerts_end_to_end_seconds", "Alert created → delivered",
                                    ["webhook"], registry=registry,
                                    buckets=(0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
        self.pending = Gauge("finsent_alerts_outbox_pending", "Deliveries waiting in the outbox", registry=registry)
        self.bad_records = Counter("finsent_alerts_bad_records_total", "Input records that failed validation",
                                   ["topic"], registry=registry)
        self.sync_errors = Counter("finsent_alerts_sync_errors_total",
                                   "Failed mirrors of the outbox to Elasticsearch/Kafka (retried)",
                                   ["sink"], registry=registry)
        # Logged with a traceback, and otherwise silent: a rule that raised on an input record (its alerts are never
        # raised; the record goes to the DLQ), a delivery and mirror pass or a webhook's worker that failed (nothing
        # is delivered meanwhile), an outbox row this release cannot read (given up: its deliveries failed).
        self.engine_errors = Counter("finsent_alerts_engine_errors_total",
                                     "Input records the rules failed on (stage rules), failed delivery passes "
                                     "(stage dispatch), outbox rows given up as unreadable (stage outbox)",
                                     ["stage"], registry=registry)
        # Not retried: the alert stays out of the alerts index and topic for good (alerts/service.py _refused).
        self.sync_given_up = Counter("finsent_alerts_sync_given_up_total",
                                     "Alerts the mirror gave up after the alerts index refused them for what they are",
                                     registry=registry)

    def declare(self, webhooks: Iterable[str], rules: Iterable[tuple[str, str]] = (),
                inputs: Iterable[str] = ()) -> None:
        """Create the labelled series at 0 before anything happens: a series born at 1 shows no
        ``increase()``, so the first dead letter per webhook after a restart would page no one."""
        for webhook in webhooks:
            for metric in (self.sent, self.failed, self.latency, self.end_to_end):
                metric.labels(webhook)
            for outcome in OUTCOMES:
                self.attempts.labels(webhook, outcome)
        for rule, kind in rules:
            self.raised.labels(rule, kind)
        for topic in inputs:
            self.bad_records.labels(topic)
        for reason in SUPPRESSED:
            self.suppressed.labels(reason)
        for sink in ("elasticsearch", "kafka"):
            self.sync_errors.labels(sink)
        for stage in ENGINE_STAGES:
            self.engine_errors.labels(stage)
