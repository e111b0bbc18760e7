"""Rendering of results (JSON, tables, plot), memory peaks, paced load, profile summaries."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import psutil
import pytest

from bench import load, memory, profiling, report, suite, targets

MODEL_REPORT = {
    "machine": {"cpus": 2, "platform": "Linux"},
    "baseline": {"docs_per_s": 9.0},
    "scorer": {"device": "cpu", "cells": [
        {"name": "realistic", "batch_size": 64, "max_length": 128, "text_tokens": "mixed", "docs_per_s": 300.0},
        *({"name": f"b{b}-len{n}", "batch_size": b, "max_length": n + 2, "text_tokens": n, "docs_per_s": d}
          for n, rows in ((16, ((1, 80.0), (16, 600.0), (64, 900.0))), (128, ((1, 40.0), (16, 150.0), (64, 170.0))))
          for b, d in rows),
    ]},
}


def test_plot_writes_a_png(tmp_path):
    path = suite.plot({"model": MODEL_REPORT, "machine": {"cpu_model": "Test CPU", "nproc": 2}}, tmp_path / "p.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000


def test_plot_without_grid_is_an_error(tmp_path):
    grid_less = {"model": MODEL_REPORT | {"scorer": {"cells": [MODEL_REPORT["scorer"]["cells"][0]]}}}
    with pytest.raises(ValueError, match="no batch-size cells"):
        suite.plot(grid_less, tmp_path / "p.png")


def test_series_group_and_sort():
    rows = [{"g": "a", "x": 4, "y": 1.0}, {"g": "a", "x": 1, "y": 2.0}, {"g": "b", "x": 2, "y": 3.0}]
    assert report.series_by(rows, "g", "x", "y") == {"a": [(1, 2.0), (4, 1.0)], "b": [(2, 3.0)]}


def test_tables_cover_every_section(tmp_path):
    from rich.console import Console

    results = {
        "model": MODEL_REPORT | {"summary": suite.model_summary(MODEL_REPORT)},
        "pipeline": {"model": {"origin": "tiny"}, "scorer": {"docs_per_s": 250.0, "batch_size": 64, "device": "cpu",
                                                            "torch_threads": 2, "rounds_docs_per_s": [240.0, 250.0, 262.5]},
                     "max_sustained": {"docs_per_s": 200.0}, "end_to_end_vs_scorer": 0.8,
                     "latency": [{"fraction": 0.5, "target_docs_per_s": 100.0, "n": 10, "p50_s": 0.2, "p95_s": 0.4,
                                  "p99_s": 0.5}], "worker_peak_rss_bytes": 700_000_000},
        "memory": {"processes": {"worker": {"peak_rss_bytes": 700_000_000, "samples": 9, "state": "ran"}},
                   "swap": {"version": "v2-promoted", "seconds": 0.4}},
        "targets": targets.judge({"p99_at_half_max_s": 0.5}),
    }
    console = Console(record=True, width=160)
    for table in report.tables(results):
        console.print(table)
    text = console.export_text()
    for expected in ("Pipeline (model: tiny)", "200.0 docs/s", "250.0 docs/s (median of 3: 240.0–262.5)", "p99 0.500s",
                     "700 MB", "Peak memory, a hot swap included (0.4 s)", "Targets",
                     "PASS", "not measured", "scorer / baseline"):
        assert expected in text
    report.write_json(results, tmp_path / "r.json")
    assert orjson.loads((tmp_path / "r.json").read_bytes())["pipeline"]["end_to_end_vs_scorer"] == 0.8


def test_machine_describes_the_cpu():
    info = report.machine()
    assert info["nproc"] == os.cpu_count()
    assert info["cpu_model"]
    assert info["load_average_1m"] >= 0


def test_peak_tracker_keeps_the_maximum_of_each_process():
    tracker = memory.PeakTracker()
    tracker.add({"worker": 100, "ingest": 50})
    tracker.add({"worker": 300})
    tracker.add({"worker": 200, "ingest": 40})
    assert tracker.peaks == {"worker": 300, "ingest": 50}
    assert tracker.samples == {"worker": 3, "ingest": 2}


def test_rss_sampler_measures_a_real_process_and_its_children():
    code = "import subprocess, sys, time; b = bytearray(40_000_000); subprocess.run([sys.executable, '-c', " \
           "'import time; x = bytearray(30_000_000); time.sleep(3)'])"
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = memory.RssSampler(interval=0.05)
    try:
        sampler.watch("parent", proc.pid)
        watched = psutil.Process(proc.pid)
        sampler.start()
        proc.wait(30)
    finally:
        peaks = sampler.stop()
    assert peaks["parent"] > 70_000_000  # 40 MB here + 30 MB in the child, each on top of an interpreter
    assert memory.tree_rss(watched) is None  # gone: the peak stays, new samples add nothing
    assert sampler.peaks()["parent"] == peaks["parent"]


def test_synthetic_docs_are_reproducible_and_valid():
    first, again = load.synthetic_docs(50, "bench-x"), load.synthetic_docs(50, "bench-x")
    assert [d.text for d in first] == [d.text for d in again]
    assert len({d.id for d in first}) == 50
    assert all(d.source == "bench-x" and d.tickers and d.ingested_at.tzinfo for d in first)
    lines = load.jsonl_lines(first).splitlines()
    assert len(lines) == 50
    assert set(orjson.loads(lines[0])) == {"source", "source_id", "title", "text", "tickers", "lang"}


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class RecordingProducer:
    def __init__(self, clock):
        self.clock = clock
        self.sent = []
        self.flushed = False

    def send(self, topic, key, value):
        self.sent.append((self.clock(), topic, key, orjson.loads(value)))

    def flush(self):
        self.flushed = True


def test_paced_producer_sends_on_schedule_with_fresh_ingested_at():
    clock = FakeClock()
    producer = RecordingProducer(clock)
    docs = load.synthetic_docs(5, "bench-p")
    achieved = load.produce_paced(producer, "t.raw", docs, 10.0, clock=clock, sleep=clock.sleep)
    assert [round(at, 6) for at, *_ in producer.sent] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert producer.flushed
    assert achieved == pytest.approx(12.5)  # 5 docs over the 0.4 s between the first and the last send
    assert all(topic == "t.raw" and key == doc.tickers[0].encode() for (_, topic, key, _), doc in zip(producer.sent, docs))
    assert producer.sent[0][3]["id"] == docs[0].id


STACKS = """\
thread (1): MainThread;BaseEventLoop._run_once (asyncio/base_events.py:1900);RawBatchPipeline.score (stream/pipeline.py:80);parse_raw (stream/validation.py:20);BaseModel.model_validate_json (pydantic/main.py:700) 6
thread (1): MainThread;BaseEventLoop._run_once (asyncio/base_events.py:1900);RawBatchPipeline.deliver (stream/pipeline.py:130);AsyncElasticsearch.bulk (elasticsearch/_async/client/__init__.py:900) 4
thread (2): finsent-score_0;_WorkItem.run (concurrent/futures/thread.py:58);Scorer._probabilities (model/scorer.py:120);plain_ids (model/token_ids.py:25) 10
thread (2): finsent-score_0;_WorkItem.run (concurrent/futures/thread.py:58);Scorer._probabilities (model/scorer.py:125);BertModel.forward (transformers/models/bert/modeling_bert.py:900);linear (torch/nn/functional.py) 80
"""


def test_profile_summaries_from_collapsed_stacks():
    stacks = profiling.parse_collapsed(STACKS.splitlines() + ["garbage line"])
    assert len(stacks) == 4
    assert stacks[0][0][-1] == ("model_validate_json", "pydantic/main.py")  # method name without its class
    shares = profiling.inclusive(stacks)
    assert shares["scoring (Scorer._probabilities, whole)"] == pytest.approx(0.9)
    assert shares["model forward (torch)"] == pytest.approx(0.8)
    assert shares["tokenisation"] == pytest.approx(0.1)
    assert shares["pipeline.score and .deliver (event loop side)"] == pytest.approx(0.1)
    assert shares["validation (parse_raw)"] == pytest.approx(0.06)
    assert shares["Elasticsearch client (bulk)"] == pytest.approx(0.04)
    assert shares["asyncio event loop (all)"] == pytest.approx(0.1)
    assert profiling.by_thread(stacks) == {"finsent-score_0": pytest.approx(0.9), "MainThread": pytest.approx(0.1)}
    top = profiling.self_time(stacks, top=2)
    assert top == [("linear (torch/nn/functional.py)", 0.8), ("plain_ids (model/token_ids.py)", 0.1)]


def test_profile_stacks_of_a_child_process_are_named_after_it():
    child = ('process 10:"python finsent stream worker";process 11:"python -c from multiprocessing.spawn import '
             'spawn_main; spawn_main(tracker_fd=4) --multiprocessing-fork";thread (11): MainThread;'
             '_serve (model/scorer_process.py:120);Scorer._probabilities (model/scorer.py:125) 7')
    parent = 'process 10:"python finsent stream worker";thread (10): MainThread;_run_once (asyncio/base_events.py:1) 3'
    stacks = profiling.parse_collapsed([child, parent])
    assert [frames[-1] for frames, _ in stacks] == [("_probabilities", "model/scorer.py"),
                                                    ("_run_once", "asyncio/base_events.py")]
    assert profiling.by_thread(stacks) == {"MainThread (child process)": pytest.approx(0.7),
                                           "MainThread": pytest.approx(0.3)}
    assert profiling.inclusive(stacks)["scoring (Scorer._probabilities, whole)"] == pytest.approx(0.7)


def _round(baseline: float, fp32: float, int8: float) -> dict:
    return {"baseline": {"docs_per_s": baseline}, "scorer": {"cells": [{"docs_per_s": fp32}]},
            "scorer_int8": {"cells": [{"docs_per_s": int8}]}}


def test_the_reported_round_is_the_one_with_the_median_ratio():
    from bench.model_bench import median_round, round_summary

    rounds = [_round(10.0, 150.0, 200.0), _round(8.0, 150.0, 190.0), _round(12.0, 150.0, 210.0)]  # 15x, 18.75x, 12.5x
    assert median_round(rounds) is rounds[0]
    assert median_round(rounds[1:]) is rounds[2]  # even count: the lower middle, never a flattering pick
    assert round_summary(rounds[1]) == {"baseline_docs_per_s": 8.0, "scorer_docs_per_s": 150.0, "scorer_vs_baseline": 18.75,
                                        "scorer_int8_docs_per_s": 190.0, "scorer_int8_vs_baseline": 23.75}
    with pytest.raises(ValueError, match="no rounds"):
        median_round([])


def test_model_summary_shows_the_spread_of_the_rounds():
    from bench.model_bench import round_summary

    rounds = [round_summary(_round(b, 150.0, 200.0)) for b in (10.0, 8.0, 12.0)]
    summary = suite.model_summary(MODEL_REPORT | {"rounds": rounds, "speedup_range": [12.5, 18.75]})
    assert summary["scorer / baseline"] == pytest.approx(300.0 / 9.0)
    assert summary["scorer / baseline, lowest of 3 rounds"] == 12.5
    assert summary["scorer / baseline, highest of 3 rounds"] == 18.75


def test_model_summary_names_the_main_scorers_precision_and_each_reference_variant():
    report = MODEL_REPORT | {"scorer": MODEL_REPORT["scorer"] | {"precision": "bf16"},
                             "scorer_fp32": {"precision": "fp32", "cells": [{"docs_per_s": 150.0}]},
                             "scorer_onnx_int8": {"precision": "onnx-int8", "cells": [{"docs_per_s": 180.0}]}}
    summary = suite.model_summary(report)
    assert summary["scorer docs/s (bf16, batch 64, realistic texts)"] == 300.0
    assert summary["scorer fp32 / baseline"] == pytest.approx(150.0 / 9.0)
    assert summary["scorer onnx-int8 docs/s (same texts)"] == 180.0


def test_reference_variants_are_every_other_precision_and_bf16_only_with_hardware(monkeypatch):
    import torch

    from bench.model_bench import reference_variants

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert reference_variants("bf16") == [("scorer_fp32", None), ("scorer_int8", "int8"), ("scorer_onnx_int8", "onnx-int8")]
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert reference_variants(None) == [("scorer_int8", "int8"), ("scorer_onnx_int8", "onnx-int8")]


def _dies() -> None:
    os._exit(137)  # as a process killed for memory


def test_a_bench_child_that_dies_is_an_error_not_a_wait():
    from bench.model_bench import _in_child

    assert _in_child(max, 2, 5) == 5
    with pytest.raises(RuntimeError, match="process for _dies died before it finished"):
        _in_child(_dies)  # multiprocessing.Pool.apply waited here for good
