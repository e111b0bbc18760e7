"""Targets of issue 9 judged as ratios from one run's figures."""

from __future__ import annotations

import pytest

from bench import suite, targets

GOOD = {
    "scorer_docs_per_s": 400.0, "baseline_docs_per_s": 10.0,          # 40x
    "end_to_end_docs_per_s": 300.0, "worker_scorer_docs_per_s": 350.0,  # 0.857x
    "p99_at_half_max_s": 0.6, "worker_peak_rss_bytes": 900_000_000,
}


def by_key(verdicts):
    return {v["key"]: v for v in verdicts}


def test_all_targets_pass_with_margins():
    verdicts = by_key(targets.judge(GOOD))
    assert verdicts["scorer_vs_baseline"]["value"] == pytest.approx(40.0)
    assert verdicts["scorer_vs_baseline"]["margin"] == pytest.approx(2.0)
    assert verdicts["end_to_end_vs_scorer"]["value"] == pytest.approx(300 / 350)
    assert verdicts["worker_peak_rss_gb"]["value"] == pytest.approx(0.9)
    assert all(v["passed"] for v in verdicts.values())
    assert targets.overall(list(verdicts.values())) is True


@pytest.mark.parametrize("key, change, failing", [
    ("baseline_docs_per_s", 25.0, "scorer_vs_baseline"),            # 16x < 20x
    ("end_to_end_docs_per_s", 270.0, "end_to_end_vs_scorer"),       # 0.77x < 0.8x
    ("p99_at_half_max_s", 1.2, "p99_at_half_max_s"),
    ("worker_peak_rss_bytes", 1_600_000_000, "worker_peak_rss_gb"),
])
def test_each_target_can_fail(key, change, failing):
    verdicts = targets.judge(GOOD | {key: change})
    failed = [v["key"] for v in verdicts if v["passed"] is False]
    assert failed == [failing]
    assert targets.overall(verdicts) is False


def test_limits_are_inclusive():
    edge = GOOD | {"baseline_docs_per_s": 20.0, "p99_at_half_max_s": 1.0, "worker_peak_rss_bytes": 1_500_000_000}
    verdicts = by_key(targets.judge(edge))
    assert verdicts["scorer_vs_baseline"]["passed"] is True   # exactly 20x
    assert verdicts["p99_at_half_max_s"]["passed"] is True
    assert verdicts["worker_peak_rss_gb"]["passed"] is True


def test_end_to_end_falls_back_to_the_scorer_grid():
    figures = {k: v for k, v in GOOD.items() if k != "worker_scorer_docs_per_s"}
    assert by_key(targets.judge(figures))["end_to_end_vs_scorer"]["value"] == pytest.approx(0.75)


def test_unmeasured_targets_are_not_judged():
    verdicts = targets.judge({"p99_at_half_max_s": 0.4})
    assert [v["passed"] for v in verdicts] == [None, None, True, None]
    assert targets.overall(verdicts) is True
    assert targets.overall(targets.judge({})) is None


def test_figures_from_a_bench_all_result():
    results = {
        "model": {"scorer": {"cells": [{"docs_per_s": 500.0}]}, "baseline": {"docs_per_s": 20.0}},
        "pipeline": {"max_sustained": {"docs_per_s": 210.0}, "scorer": {"docs_per_s": 240.0},
                     "latency": [{"fraction": 0.25, "p99_s": 0.3}, {"fraction": 0.5, "p99_s": 0.7}],
                     "worker_peak_rss_bytes": 800_000_000},
        "memory": {"processes": {"worker": {"peak_rss_bytes": 950_000_000}, "ingest": {"peak_rss_bytes": 1}}},
    }
    figures = suite.figures(results)
    assert figures == {"scorer_docs_per_s": 500.0, "baseline_docs_per_s": 20.0, "end_to_end_docs_per_s": 210.0,
                       "worker_scorer_docs_per_s": 240.0, "p99_at_half_max_s": 0.7,
                       "worker_peak_rss_bytes": 950_000_000}
    verdicts = by_key(targets.judge(figures))
    assert verdicts["scorer_vs_baseline"]["value"] == pytest.approx(25.0)
    assert verdicts["end_to_end_vs_scorer"]["value"] == pytest.approx(0.875)


def test_gpu_section_only_when_the_grid_ran_on_cuda():
    cpu = {"machine": {"cuda": None}, "scorer": {"device": "cpu", "cells": [{"batch_size": 64, "max_length": 130,
                                                                              "docs_per_s": 100.0}]}}
    assert suite.gpu_section(cpu) is None
    gpu = {"machine": {"cuda": "NVIDIA H200"}, "scorer": {"device": "cuda", "cells": [
        {"batch_size": 256, "max_length": 130, "docs_per_s": 9000.0, "name": "b256", "texts": ["x"]}]}}
    assert suite.gpu_section(gpu) == {"device": "NVIDIA H200",
                                      "rows": [{"batch_size": 256, "max_length": 130, "docs_per_s": 9000.0}]}
