"""Prometheus metrics of the stream worker, created against an injected registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = Counter("finsent_stream_consumed_total", "Raw records consumed", registry=registry)
        self.scored = Counter("finsent_stream_documents_scored_total", "Documents scored", registry=registry)
        self.indexed = Counter("finsent_stream_documents_indexed_total", "Documents acknowledged by Elasticsearch",
                               registry=registry)
        self.dead_letters = Counter("finsent_stream_dead_letters_total", "Records sent to the DLQ", ["stage"],
                                    registry=registry)
        self.es_retries = Counter("finsent_stream_es_retries_total", "Elasticsearch bulk retries", registry=registry)
        self.aggregates = Counter("finsent_stream_aggregates_total", "Window aggregates emitted", registry=registry)
        self.superseded_aggregates = Counter(
            "finsent_stream_superseded_aggregates_total",
            "Window aggregates neither indexed nor sent: Elasticsearch held a newer version of the window (written by "
            "the worker its partition went to)", registry=registry)
        self.late_events = Counter("finsent_stream_late_window_events_total",
                                   "Ticker events older than every kept window", registry=registry)
        self.refused_events = Counter(
            "finsent_stream_refused_window_events_total",
            "Ticker events kept out of the windows: dated after now plus the tolerance (future), or outside the "
            "calendar (out_of_range)", ["reason"], registry=registry)
        self.batch_size = Histogram("finsent_stream_batch_size", "Raw records per batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096), registry=registry)
        self.inference_seconds = Histogram("finsent_stream_inference_seconds", "Model time per batch",
                                           registry=registry)
        self.latency = Histogram("finsent_stream_end_to_end_latency_seconds", "ingested_at → indexed_at",
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.lag = Gauge("finsent_stream_consumer_lag", "Records behind the log end", ["partition"],
                         registry=registry)
        self._lag_partitions: set[str] = set()
        self.partitions = Gauge("finsent_stream_assigned_partitions",
                                "Raw-topic partitions this worker owns (after the last rebalance)", registry=registry)
        self.stalled = Gauge("finsent_stream_stalled", "1 while records wait and none are consumed", registry=registry)
        self.rewinds = Counter("finsent_stream_stall_rewinds_total",
                               "Rewinds to the committed offsets after a stall", registry=registry)
        self.gap_rewinds = Counter("finsent_stream_gap_rewinds_total",
                                   "Rewinds to a record that was fetched but never handed to the agent", ["topic"],
                                   registry=registry)
        self.model_info = Info("finsent_stream_model", "Model scoring new documents", registry=registry)
        self.model_swaps = Counter("finsent_stream_model_swaps_total", "Hot model swaps", registry=registry)
        self.scorer_restarts = Counter("finsent_stream_scorer_restarts_total",
                                       "Scorer processes started again after they died", registry=registry)
        self.model_load_failures = Counter("finsent_stream_model_load_failures_total",
                                           "Model loads that failed (the old model stays)", registry=registry)

    def set_lag(self, lag: Mapping[int, int]) -> None:
        """The lag of every raw partition this worker owns; the labels of others go."""
        self.keep_lag_of(lag)
        for partition, behind in lag.items():
            self.lag.labels(str(partition)).set(behind)
        self._lag_partitions = {str(p) for p in lag}

    def keep_lag_of(self, partitions: Iterable[int]) -> None:
        """Remove the lag of partitions no longer owned: their new owner reports it (summed, they would count
        twice)."""
        keep = {str(p) for p in partitions}
        for gone in self._lag_partitions - keep:
            self.lag.remove(gone)
        self._lag_partitions &= keep
