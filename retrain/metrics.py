"""Prometheus metrics of drift checks and retrains, created against an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

CHECK_OUTCOMES = ("drift", "stable", "skipped", "stopped")  # retrain.drift_check.run_check
DECISIONS = ("promoted", "rejected", "superseded", "skipped", "stopped", "failed", "busy")  # retrain.retraining.Outcome


class RetrainMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.drift_statistic = Gauge("finsent_drift_statistic", "Latest statistic of each drift monitor",
                                     ["monitor"], registry=self.registry)
        self.drift_threshold = Gauge("finsent_drift_threshold", "Threshold of each drift monitor",
                                     ["monitor"], registry=self.registry)
        self.drift_detected = Gauge("finsent_drift_detected", "1 if the latest check of the monitor found drift",
                                    ["monitor"], registry=self.registry)
        self.drift_checks = Counter("finsent_drift_checks", "Drift checks run, by outcome",
                                    ["outcome"], registry=self.registry)
        for outcome in CHECK_OUTCOMES:
            self.drift_checks.labels(outcome=outcome)
        self.fresh_labels = Gauge("finsent_fresh_labels", "Resolved labels newer than the champion's training data",
                                  registry=self.registry)
        self.retrain_decisions = Counter("finsent_retrain_decisions", "Retrain decisions by outcome",
                                         ["decision"], registry=self.registry)
        for decision in DECISIONS:  # at 0 from the start: increase() cannot see a series born at 1
            self.retrain_decisions.labels(decision=decision)
        self.retrain_unannounced = Counter(
            "finsent_retrain_unannounced_promotions", "Promotions whose control message failed: running workers "
            "keep the old model until told (`finsent model promote VERSION`) or restarted", registry=self.registry)
        self.retrain_seconds = Gauge("finsent_retrain_last_duration_seconds", "Duration of the last retrain",
                                     registry=self.registry)
        self.retention_deleted = Counter("finsent_retention_deleted", "Documents deleted by index retention",
                                         ["index"], registry=self.registry)
        self.retention_runs = Counter("finsent_retention_runs", "Index retention runs of the scheduler, by outcome",
                                      ["outcome"], registry=self.registry)
        for outcome in ("ok", "failed"):
            self.retention_runs.labels(outcome=outcome)
