"""End-to-end benchmark: real Kafka → real ``finsent stream worker`` subprocess → real Elasticsearch.

1. Model: the registry's champion, else a tiny model trained for a few steps (the same
   architecture, so the same speed; its accuracy is irrelevant here). The output says which.
2. Scorer: the worker's scorer on the same documents, batched as the worker batches, in this
   process, never while the worker is busy: rounds before the worker starts and as many again
   after the drain, once the worker idles. The median of all of them is the reference: one pass
   moved by 10% between runs, and the machine's speed by 20% within minutes, so rounds on both
   sides of the drain measure the scorer as fast as the machine was while the worker drained.
3. Maximum sustained rate: a backlog of N documents produced at once; the rate is read from
   the ``indexed_at`` stamps the worker writes (see :func:`bench.stats.drain_rate`).
4. Latency at 25/50/75% of that rate: documents produced at a paced rate with a fresh
   ``ingested_at``; latency = ``indexed_at − ingested_at`` read back from Elasticsearch.
   ``indexed_at`` is stamped just before the bulk request, so a document becomes searchable
   one bulk round trip (a few ms here) later than its latency says.
The worker's resident memory is sampled throughout.
"""

from __future__ import annotations

import gc
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench import load, stats
from bench.memory import RssSampler
from bench.model_choice import choose_model
from bench.processes import BenchWorld, FinsentProcess
from finsent import clients
from finsent.settings import Settings

log = logging.getLogger(__name__)
Echo = Callable[[str], None]
FRACTIONS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class PipelineConfig:
    backlog: int = 3000             # documents in the drain measurement
    level_seconds: float = 20.0     # paced sending time per latency level
    fractions: tuple[float, ...] = FRACTIONS
    warmup: int = 200               # documents before measuring (model warm-up, consumer group join)
    batch_size: int | None = None   # None: FINSENT_WORKER_BATCH_SIZE
    batch_within: float | None = None
    train_steps: int = 20           # steps of the tiny model when the registry has no champion
    model: str | None = None        # a version or a model folder instead of the champion
    drain_timeout: float = 600.0    # seconds without progress before giving up
    max_docs_per_level: int = 10_000
    threads: int | None = None      # torch threads of the worker and the scorer (None: torch's default)
    scorer_rounds: int = 3          # scorer passes before the worker starts, and as many after the drain


def measure_scorer(settings: Settings, model_path: Path, texts: list[str], batch_size: int,
                   threads: int | None = None, rounds: int = 1) -> dict[str, Any]:
    """Docs/s of the worker's scorer on ``texts``, in the worker's batches, after one warm-up batch:
    the median of ``rounds`` passes (all of them under ``rounds_docs_per_s``)."""
    import torch

    from model.input_text import for_model
    from model.quantization import resolve_quantize
    from model.scorer import Scorer

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    scorer = Scorer.load(model_path, device=settings.device, max_length=settings.max_length, batch_size=batch_size,
                         threads=threads, quantize=resolve_quantize(settings.model_quantize))  # as the worker loads it
    scorer.score(texts[:batch_size])
    passes = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            scorer.score(texts[i : i + batch_size])
        passes.append(len(texts) / (time.perf_counter() - started))
    lengths = [len(ids) for ids in scorer.tokenizer([for_model(t) for t in texts], truncation=False)["input_ids"]]
    result = with_rounds({"docs": len(texts), "batch_size": batch_size, "device": scorer.device,
                          "torch_threads": torch.get_num_threads(), "quantized": scorer.quantized,
                          "precision": scorer.precision, "mean_tokens": sum(lengths) / len(lengths),
                          "max_tokens": max(lengths)}, passes)
    del scorer
    gc.collect()
    return result


def with_rounds(measurement: dict[str, Any], rounds: list[float]) -> dict[str, Any]:
    """``measurement`` with its rounds and their median as the docs/s."""
    median = statistics.median(rounds)
    return measurement | {"docs_per_s": median, "rounds_docs_per_s": rounds, "seconds": measurement["docs"] / median}


def wait_idle(pid: int, *, below: float = 10.0, timeout: float = 60.0) -> bool:
    """Until process ``pid`` uses under ``below`` percent of one CPU over a second; False on timeout."""
    process = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.cpu_percent(interval=1.0) < below:
            return True
    return False


def bracketed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One scorer reference from the rounds before the worker started and after the drain."""
    return with_rounds(before, before["rounds_docs_per_s"] + after["rounds_docs_per_s"]) | {
        "rounds_before_drain": before["rounds_docs_per_s"], "rounds_after_drain": after["rounds_docs_per_s"]}


def es_times(settings: Settings, source: str, size: int) -> list[tuple[datetime, datetime]]:
    with clients.elasticsearch(settings) as es:
        es.indices.refresh(index=settings.index("docs"))
        answer = es.search(index=settings.index("docs"), size=size, query={"term": {"source": source}},
                           source_includes=["ingested_at", "indexed_at"])
    return [(datetime.fromisoformat(h["_source"]["ingested_at"]), datetime.fromisoformat(h["_source"]["indexed_at"]))
            for h in answer["hits"]["hits"]]


def wait_indexed(settings: Settings, source: str, expected: int, worker: FinsentProcess, stall_timeout: float) -> None:
    """Block until ``expected`` docs of ``source`` are searchable; fail when nothing moves for
    ``stall_timeout`` seconds or the worker dies."""
    last, moved_at = -1, time.monotonic()
    with clients.elasticsearch(settings) as es:
        while True:
            if not worker.running():
                raise RuntimeError(f"the worker exited ({worker.proc.returncode}); log {worker.log_path}:\n"
                                   f"{worker.tail()}")
            es.indices.refresh(index=settings.index("docs"))
            count = es.count(index=settings.index("docs"), query={"term": {"source": source}})["count"]
            if count >= expected:
                return
            if count != last:
                last, moved_at = count, time.monotonic()
            elif time.monotonic() - moved_at > stall_timeout:
                raise RuntimeError(f"{count}/{expected} docs of {source} indexed, none for {stall_timeout:.0f}s; "
                                   f"worker log {worker.log_path}:\n{worker.tail()}")
            time.sleep(0.5)


def run(settings: Settings, config: PipelineConfig = PipelineConfig(), *, echo: Echo = print,
        keep: bool = False) -> dict[str, Any]:
    batch_size = config.batch_size or settings.worker_batch_size
    batch_within = config.batch_within or settings.worker_batch_within
    if not 0 < config.backlog <= 10_000 or config.max_docs_per_level > 10_000:
        raise ValueError("the backlog and each level hold at most 10000 docs (one Elasticsearch search reads them)")
    sampler = RssSampler()
    with tempfile.TemporaryDirectory(prefix="finsent-bench-model-") as scratch, \
            BenchWorld(settings, keep=keep, echo=echo) as world:
        s = world.settings
        choice = choose_model(settings, config.model, config.train_steps, Path(scratch), echo)
        echo(f"model: {choice.origin}")
        raw_topic = s.topic("raw")
        backlog = load.synthetic_docs(config.backlog, "bench-backlog")
        from stream.pipeline import text_to_score

        echo(f"scorer: {min(len(backlog), 1024)} docs in batches of {batch_size}, {config.scorer_rounds} round(s)")
        scorer_texts = [text_to_score(d) for d in backlog[:1024]]
        scorer = measure_scorer(settings, choice.path, scorer_texts, batch_size, config.threads, config.scorer_rounds)
        echo(f"scorer before the worker starts: {scorer['docs_per_s']:.1f} docs/s (median; rounds "
             f"{', '.join(f'{r:.1f}' for r in scorer['rounds_docs_per_s'])})")

        # torch reads OMP_NUM_THREADS for its intra-op pool: the worker scores with the same threads.
        threads_env = ({"OMP_NUM_THREADS": str(config.threads), "FINSENT_MODEL_THREADS": str(config.threads)}
                       if config.threads else {})
        worker = world.start_worker(choice.model_dir, choice.ref, batch_size, batch_within, **threads_env)
        sampler.watch("worker", worker.pid)
        sampler.start()
        worker.wait_healthy(timeout=300)
        producer = clients.kafka_producer(s)
        try:
            echo(f"warm-up: {config.warmup} docs")
            load.produce_backlog(producer, raw_topic, load.synthetic_docs(config.warmup, "bench-warmup", seed=1))
            wait_indexed(s, "bench-warmup", config.warmup, worker, config.drain_timeout)

            echo(f"backlog: {config.backlog} docs at once")
            started = time.monotonic()
            load.produce_backlog(producer, raw_topic, backlog)
            wait_indexed(s, "bench-backlog", config.backlog, worker, config.drain_timeout)
            wall = time.monotonic() - started
            stamps = [indexed for _, indexed in es_times(s, "bench-backlog", config.backlog)]
            drain = stats.drain_rate(stamps) | {"wall_docs_per_s": config.backlog / wall, "wall_seconds": wall}
            echo(f"max sustained: {drain['docs_per_s']:.1f} docs/s (wall clock incl. start: "
                 f"{drain['wall_docs_per_s']:.1f})")
            quiet = wait_idle(worker.pid)  # the window events of the backlog are aggregated by then
            after = measure_scorer(settings, choice.path, scorer_texts, batch_size, config.threads,
                                   config.scorer_rounds)
            scorer = bracketed(scorer, after) | {"worker_idle_after_drain": quiet}
            echo(f"scorer after the drain: rounds {', '.join(f'{r:.1f}' for r in after['rounds_docs_per_s'])}; "
                 f"reference {scorer['docs_per_s']:.1f} docs/s (median of all rounds)")

            levels = []
            for fraction in config.fractions:
                per_second = fraction * drain["docs_per_s"]
                count = max(1, min(config.max_docs_per_level, round(per_second * config.level_seconds)))
                source = f"bench-level-{round(fraction * 100)}"
                echo(f"latency at {fraction:.0%}: {count} docs at {per_second:.1f} docs/s")
                docs = load.synthetic_docs(count, source, seed=round(fraction * 100))
                achieved = load.produce_paced(producer, raw_topic, docs, per_second)
                wait_indexed(s, source, count, worker, config.drain_timeout)
                summary = stats.latency_summary(stats.latencies(es_times(s, source, count)))
                levels.append({"fraction": fraction, "target_docs_per_s": per_second,
                               "achieved_docs_per_s": achieved} | summary)
                echo(f"  p50 {summary['p50_s']:.3f}s p95 {summary['p95_s']:.3f}s p99 {summary['p99_s']:.3f}s")
        finally:
            producer.close()
            peaks = sampler.stop()
            worker.stop()
        return {
            "prefix": {"topics": s.topic_prefix, "indices": s.index_prefix, "kept": keep,
                       "folder": str(world.root) if keep else None},
            "model": {"origin": choice.origin, "ref": choice.ref},
            "config": asdict(config) | {"batch_size": batch_size, "batch_within": batch_within},
            "scorer": scorer,
            "max_sustained": drain,
            "end_to_end_vs_scorer": drain["docs_per_s"] / scorer["docs_per_s"],
            "latency": levels,
            "worker_peak_rss_bytes": peaks.get("worker"),
        }


def p99_at(result: dict[str, Any], fraction: float) -> float | None:
    for level in result.get("latency", []):
        if abs(level["fraction"] - fraction) < 1e-9:
            return level["p99_s"]
    return None
