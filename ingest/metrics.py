"""Prometheus metrics of ingest, per source, created against an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.fetched = Counter(
            "finsent_ingest_fetched_total", "Documents read from a source", ["source"], registry=registry)
        self.produced = Counter(
            "finsent_ingest_produced_total", "Documents acknowledged by Kafka", ["source"], registry=registry)
        self.duplicates = Counter(
            "finsent_ingest_duplicates_total", "Documents recognised as duplicates (kind: id, url, near)",
            ["source", "kind"], registry=registry)
        self.held_back = Counter(
            "finsent_ingest_held_back_total",
            "Undated documents of a new source's first poll: its backlog, remembered as seen but not produced",
            ["source"], registry=registry)
        self.errors = Counter(
            "finsent_ingest_errors_total",
            "Failures by stage (fetch, parse, delivery) and skipped bad documents (stage=invalid, with reason)",
            ["source", "stage", "reason"], registry=registry)
        # A failing source is retried less and less often (backoff up to FINSENT_INGEST_BACKOFF_MAX), so a rate of
        # its errors stays tiny however long it is down: this says that it is down.
        self.failing_polls = Gauge(
            "finsent_ingest_consecutive_fetch_failures",
            "Polls of a source that failed in a row, until one fetches again (long-running commands)",
            ["source"], registry=registry)
        self.fetch_seconds = Histogram(
            "finsent_ingest_fetch_seconds", "Time to fetch and parse one poll of a source", ["source"],
            registry=registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter (sum over unnamed labels); for tests and summaries."""
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total
