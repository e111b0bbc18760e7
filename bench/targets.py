"""The performance targets of issue 9 and their pass/fail judgement, from one run's figures.

Every target is a ratio or a limit measured in the same run, so the verdict holds on the
machine that ran it: throughput targets compare two throughputs measured side by side,
limits compare a figure with a fixed bound. Pure: figures in, verdicts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bench.stats import ratio

GB = 1_000_000_000


@dataclass(frozen=True)
class Target:
    key: str
    description: str
    comparison: Literal[">=", "<="]
    limit: float
    unit: str

    def passes(self, value: float) -> bool:
        return value >= self.limit if self.comparison == ">=" else value <= self.limit


TARGETS: tuple[Target, ...] = (
    Target("scorer_vs_baseline", "scorer >= 20x the one-at-a-time BERT-base pipeline", ">=", 20.0, "x"),
    Target("end_to_end_vs_scorer", "end to end >= 0.8x the scorer's own throughput", ">=", 0.8, "x"),
    Target("p99_at_half_max_s", "p99 ingest-to-indexed latency <= 1 s at 50% of the maximum", "<=", 1.0, "s"),
    Target("worker_peak_rss_gb", "worker peak memory <= 1.5 GB", "<=", 1.5, "GB"),
)


def measured(figures: Mapping[str, float | None]) -> dict[str, float | None]:
    """The value each target judges, from the run's raw figures (None: not measured).

    ``figures`` keys: ``scorer_docs_per_s`` (batched) and ``baseline_docs_per_s`` (HF pipeline,
    one message at a time) on the same texts; ``end_to_end_docs_per_s`` (sustained drain rate)
    and ``worker_scorer_docs_per_s`` (the worker's scorer on the pipeline's documents, in the
    worker's batches; ``scorer_docs_per_s`` when absent); ``p99_at_half_max_s``;
    ``worker_peak_rss_bytes``.
    """
    rss = figures.get("worker_peak_rss_bytes")
    return {
        "scorer_vs_baseline": ratio(figures.get("scorer_docs_per_s"), figures.get("baseline_docs_per_s")),
        "end_to_end_vs_scorer": ratio(figures.get("end_to_end_docs_per_s"),
                                      figures.get("worker_scorer_docs_per_s", figures.get("scorer_docs_per_s"))),
        "p99_at_half_max_s": figures.get("p99_at_half_max_s"),
        "worker_peak_rss_gb": None if rss is None else rss / GB,
    }


def judge(figures: Mapping[str, float | None], targets: tuple[Target, ...] = TARGETS) -> list[dict[str, Any]]:
    """One verdict per target: the value, the limit, ``margin`` = value / limit, and ``passed``
    (None when the run did not measure what the target needs)."""
    values = measured(figures)
    verdicts = []
    for target in targets:
        value = values.get(target.key)
        verdicts.append({
            "key": target.key,
            "description": target.description,
            "comparison": target.comparison,
            "limit": target.limit,
            "unit": target.unit,
            "value": value,
            "margin": ratio(value, target.limit),
            "passed": None if value is None else target.passes(value),
        })
    return verdicts


def overall(verdicts: list[dict[str, Any]]) -> bool | None:
    """True when every measured target passed, False when one failed, None when none was measured."""
    judged = [v["passed"] for v in verdicts if v["passed"] is not None]
    if not judged:
        return None
    return all(judged)
