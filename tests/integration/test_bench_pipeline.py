"""Smoke test of `finsent bench pipeline` with a tiny load: real Kafka, a real worker
subprocess and real Elasticsearch. It checks the shape of the results and that every
document was indexed, never how fast (speed is what the benchmark reports, not asserts)."""

from __future__ import annotations

import shutil

import orjson
import pytest

from finsent import clients
from finsent.services import manager
from tests.integration.bench_support import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKLOG, WARMUP = 80, 10


def test_bench_pipeline_end_to_end(services, tiny_model, tmp_path):
    output = tmp_path / "pipeline.json"
    run = run_bench(services, tmp_path, "pipeline", "--model", str(tiny_model.path), "--backlog", str(BACKLOG),
                    "--warmup", str(WARMUP), "--level-seconds", "1", "--batch-size", "16", "--batch-within", "0.2",
                    "--keep", "--output", str(output))
    assert run.returncode == 0, run.stderr[-3000:]
    results = orjson.loads(output.read_bytes())
    pipeline = results["pipeline"]
    prefix = pipeline["prefix"]["indices"]
    try:
        assert results["machine"]["nproc"] >= 1
        assert pipeline["model"]["origin"] == f"given: {tiny_model.path}"
        assert pipeline["scorer"]["docs_per_s"] > 0 and pipeline["scorer"]["batch_size"] == 16
        rounds = pipeline["scorer"]["rounds_docs_per_s"]
        assert len(rounds) == 6 and min(rounds) <= pipeline["scorer"]["docs_per_s"] <= max(rounds)
        assert rounds == pipeline["scorer"]["rounds_before_drain"] + pipeline["scorer"]["rounds_after_drain"]
        assert pipeline["scorer"]["worker_idle_after_drain"] is True
        assert pipeline["max_sustained"]["docs_per_s"] > 0
        assert pipeline["max_sustained"]["docs"] + 16 >= BACKLOG  # all but the first batch are in the rate
        assert pipeline["end_to_end_vs_scorer"] > 0
        assert [level["fraction"] for level in pipeline["latency"]] == [0.25, 0.5, 0.75]
        for level in pipeline["latency"]:
            assert level["n"] >= 1
            assert 0 <= level["p50_s"] <= level["p95_s"] <= level["p99_s"] <= level["max_s"]
        assert pipeline["worker_peak_rss_bytes"] > 50_000_000
        with clients.elasticsearch(services) as es:
            es.indices.refresh(index=f"{prefix}-docs")
            counts = {source: es.count(index=f"{prefix}-docs", query={"term": {"source": source}})["count"]
                      for source in ("bench-warmup", "bench-backlog")}
            level_docs = es.count(index=f"{prefix}-docs", query={"prefix": {"source": "bench-level-"}})["count"]
        assert counts == {"bench-warmup": WARMUP, "bench-backlog": BACKLOG}
        assert level_docs == sum(level["n"] for level in pipeline["latency"])
        assert "Pipeline (model: given:" in run.stdout
    finally:
        manager.remove_prefixed(services.model_copy(update={"index_prefix": prefix,
                                                            "topic_prefix": pipeline["prefix"]["topics"]}))
        shutil.rmtree(pipeline["prefix"]["folder"], ignore_errors=True)

