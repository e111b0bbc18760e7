"""Smoke test of `finsent bench memory` with a tiny load: every finsent process on real Kafka and
Elasticsearch, and a promotion halfway, so the worker's peak includes a hot swap. It checks the
shape of the results, never a figure (the benchmark reports those, it does not assert them)."""

from __future__ import annotations

import orjson
import pytest

from tests.integration.bench_support import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_memory_swaps_the_model_halfway_and_reports_every_process(services, tiny_model, tmp_path):
    output = tmp_path / "memory.json"
    run = run_bench(services, tmp_path, "memory", "--model", str(tiny_model.path), "--seconds", "4", "--rate", "10",
                    "--output", str(output))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    memory = orjson.loads(output.read_bytes())["memory"]
    assert memory["load"] == {"docs": 40, "docs_per_s": 10.0, "seconds": 4.0}
    assert memory["swap"]["version"] == f"{tiny_model.version}-promoted" and memory["swap"]["seconds"] >= 0
    states = {name: row["state"] for name, row in memory["processes"].items()}
    assert states == {"worker": "ran", "alerts": "ran", "scheduler": "ran", "dashboard": "ran", "ingest": "finished"}
    assert memory["processes"]["worker"]["peak_rss_bytes"] > 100_000_000
    assert f"the worker scores with {tiny_model.version}-promoted after" in run.stderr  # progress goes to stderr
    assert "Peak memory, a hot swap included" in run.stdout
