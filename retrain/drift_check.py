"""One drift check: read the champion's documents and fresh labels, run every monitor, record.

Reference = the earliest ``drift_reference_size`` documents the champion scored; window = its
latest ``drift_window_size``. Until it has scored both, the document monitors report "not
enough data" (no statistic, no drift). Every monitor's result goes to ``<prefix>-drift`` and
to the metrics; any drift publishes ``ControlMessage(action="drift")`` on ``<prefix>.control``.

A check can be stopped (``should_stop``, asked before the champion loads and after each scoring batch of the fresh
labels, the slow part: up to ``drift_max_labels`` of them): :class:`CheckStopped`, with nothing recorded or published.
Once the figures are recorded it runs to its end, so a drift it found is published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import helpers

from finsent.schemas import ControlMessage
from retrain.conflicts import ResolvedLabel
from retrain.context import Context, flat_details
from retrain.drift import InputDrift, PerformanceDrift, PredictionDrift, confidence_monitor, reference_spread
from retrain.review import REVIEW_SOURCE
from retrain.statistics import confusion_pairs

log = logging.getLogger(__name__)
_DOC_FIELDS = ["text", "sentiment.label", "sentiment.confidence", "scored_at"]


class CheckStopped(Exception):
    """``should_stop`` said so before the check recorded anything."""


@dataclass(frozen=True)
class MonitorResult:
    monitor: str
    statistic: float | None
    threshold: float
    drift_detected: bool
    details: dict[str, Any]


@dataclass
class CheckReport:
    model_version: str | None
    results: list[MonitorResult] = field(default_factory=list)
    fresh_labels: list[ResolvedLabel] = field(default_factory=list)
    skipped: str | None = None

    @property
    def drift_detected(self) -> bool:
        return any(r.drift_detected for r in self.results)

    def summary(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        # Monitors in a row that could not run for the same reason share it: "prediction, input=n/a (…)".
        parts: list[tuple[list[str], str]] = []
        for r in self.results:
            figure = f"{_figure(r)}{' DRIFT' if r.drift_detected else ''}"
            if parts and figure.startswith("n/a (") and parts[-1][1] == figure:
                parts[-1][0].append(r.monitor)
            else:
                parts.append(([r.monitor], figure))
        return (f"model {self.model_version}: " + "; ".join(f"{', '.join(names)}={figure}" for names, figure in parts)
                + f"; {len(self.fresh_labels)} fresh labels")


def _figure(result: MonitorResult) -> str:
    if result.statistic is not None:
        return f"{result.statistic:.4f}"
    reason = result.details.get("reason")
    return f"n/a ({reason})" if reason else "n/a"


def _docs(ctx: Context, version: str, size: int, order: str) -> list[dict[str, Any]]:
    resp = ctx.es.search(index=ctx.settings.index("docs"), size=size, source=_DOC_FIELDS,
                         sort=[{"scored_at": order}, {"id": order}], query={"term": {"model_version": version}})
    docs = [h["_source"] for h in resp["hits"]["hits"]]
    return docs if order == "asc" else docs[::-1]


def _document_monitors(ctx: Context, version: str) -> list[MonitorResult]:
    s = ctx.settings
    total = ctx.es.count(index=s.index("docs"), query={"term": {"model_version": version}})["count"]
    needed = s.drift_reference_size + s.drift_window_size
    docs: list[dict[str, Any]] = []
    if total >= needed:
        docs = _docs(ctx, version, s.drift_reference_size, "asc") + _docs(ctx, version, s.drift_window_size, "desc")
    # Page–Hinkley's delta and lambda are in standard deviations of the reference's confidences.
    spread = reference_spread([d["sentiment"]["confidence"] for d in docs[: s.drift_reference_size]])
    monitors = [
        PredictionDrift(s.drift_reference_size, s.drift_window_size, s.drift_prediction_threshold),
        confidence_monitor(min_instances=min(30, s.drift_reference_size), delta=s.drift_confidence_delta,
                           threshold=s.drift_confidence_threshold, scale=spread),
        InputDrift(s.drift_reference_size, s.drift_window_size, s.drift_oov_threshold, s.drift_length_threshold),
    ]
    if total < needed:
        why = {"reason": f"{total} documents scored by {version}, need {needed}", "documents": total}
        return [MonitorResult(m.name, None, m.threshold, False, why) for m in monitors]
    feeds = {
        "prediction": lambda d: d["sentiment"]["label"],
        "confidence": lambda d: d["sentiment"]["confidence"],
        "input": lambda d: d.get("text") or "",
    }
    for doc in docs:
        for monitor in monitors:
            monitor.update(feeds[monitor.name](doc))
    return [MonitorResult(m.name, m.statistic, m.threshold, m.drift_detected, m.details() | {"documents": total})
            for m in monitors]


def performance_labels(fresh: list[ResolvedLabel], max_labels: int) -> tuple[list[ResolvedLabel], int]:
    """The newest ``max_labels`` fresh labels the performance monitor judges, and how many it left out
    as chosen by the review queue: that queue serves the documents the model is least sure of, so
    their F1 is low by construction and would read as drift. Retraining still uses them."""
    judged = [r for r in fresh if REVIEW_SOURCE not in r.sources]
    return judged[-max_labels:], len(fresh) - len(judged)


def validation_pairs(meta: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """The (true, predicted) labels of a model's validation split, from its confusion matrix; None without one."""
    confusion = ((meta.get("metrics") or {}).get("validation") or {}).get("confusion_matrix")
    return confusion_pairs(confusion) if confusion else None


def _performance(ctx: Context, version: str, meta: dict[str, Any], fresh: list[ResolvedLabel],
                 should_stop: Callable[[], bool] = lambda: False) -> MonitorResult:
    from model.scorer import to_sentiment

    s = ctx.settings
    monitor = PerformanceDrift(validation_pairs(meta), threshold=s.drift_f1_drop, min_samples=s.drift_min_labels)
    recent, left_out = performance_labels(fresh, s.drift_max_labels)
    if len(recent) >= s.drift_min_labels:
        batches = [0]

        def stop_if_asked() -> None:
            if should_stop():
                raise CheckStopped(f"drift check of {version} stopped while scoring {len(recent)} fresh labels, "
                                   f"after {batches[0]} batch(es)")

        def after_batch() -> None:
            batches[0] += 1
            stop_if_asked()

        stop_if_asked()
        predicted = ctx.scorer(version).predict_proba([r.text for r in recent], on_batch=after_batch)
        for label, probabilities in zip(recent, predicted, strict=True):
            monitor.update((label.label, to_sentiment(probabilities).label))
    details = monitor.details() | {"fresh_labels": len(fresh), "review_labels_left_out": left_out}
    # The reason is "n labels, need m" then.
    if left_out and monitor.baseline is not None and len(recent) < s.drift_min_labels:
        details["reason"] += f"; {left_out} from the review page left out"
    return MonitorResult(monitor.name, monitor.statistic, monitor.threshold, monitor.drift_detected, details)


def record(ctx: Context, version: str | None, results: list[MonitorResult]) -> None:
    now = ctx.clock().isoformat()
    actions = [{"_index": ctx.settings.index("drift"), "_source": {
        "checked_at": now, "monitor": r.monitor, "statistic": r.statistic, "threshold": r.threshold,
        "drift_detected": r.drift_detected, "model_version": version, "details": r.details}} for r in results]
    helpers.bulk(ctx.es, actions, refresh="wait_for")
    for r in results:
        ctx.metrics.drift_threshold.labels(monitor=r.monitor).set(r.threshold)
        ctx.metrics.drift_detected.labels(monitor=r.monitor).set(1 if r.drift_detected else 0)
        if r.statistic is not None:
            ctx.metrics.drift_statistic.labels(monitor=r.monitor).set(r.statistic)


def run_check(ctx: Context, should_stop: Callable[[], bool] = lambda: False) -> CheckReport:
    version = ctx.registry.champion()
    if version is None:
        ctx.metrics.drift_checks.labels(outcome="skipped").inc()
        return CheckReport(None, skipped="no champion model in the registry")
    meta = ctx.registry.get(version)
    fresh, unresolved = ctx.fresh_labels(meta)
    ctx.metrics.fresh_labels.set(len(fresh))
    try:
        results = _document_monitors(ctx, version) + [_performance(ctx, version, meta, fresh, should_stop)]
    except CheckStopped:
        ctx.metrics.drift_checks.labels(outcome="stopped").inc()  # as a stopped retrain is counted: no check done
        raise
    report = CheckReport(version, results, fresh)
    record(ctx, version, results)
    if report.drift_detected:
        fired = [r for r in results if r.drift_detected]
        details: dict[str, Any] = {"fresh_labels": len(fresh), "unresolved_labels": len(unresolved)}
        for r in fired:
            details |= {f"{r.monitor}_statistic": r.statistic, f"{r.monitor}_threshold": r.threshold}
        ctx.publish_control(ControlMessage(
            action="drift", model_version=version, reason="drift: " + ", ".join(r.monitor for r in fired),
            details=flat_details(details), issued_at=ctx.clock()))
    ctx.metrics.drift_checks.labels(outcome="drift" if report.drift_detected else "stable").inc()
    log.info("drift check %s", report.summary())
    return report
