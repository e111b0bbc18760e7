"""Lower precision on CPU (int8, bf16): the measurement that decides the default.

``compare`` scores the same labelled texts with the fp32 model, torch's int8 dynamic
quantisation (Linear layers), an int8 ONNX Runtime export (:mod:`model.onnx_runtime`) and bf16
autocast, and reports docs/s and accuracy of each. The rule of the issue: lower the precision by
default only when it is faster and loses at most 0.5 accuracy points.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Measured with `finsent model quantization --model champion --data ../shared/data/fpb/train.csv
# --data ../shared/data/twitter_financial_news/train.csv --validation-split --threads 1` on the
# champion's validation split (1338 rows; links collapsed, last block cut to the first token).
# On a 2-core AMD EPYC (AVX2 only, no bf16 hardware; 2026-11-29, the eighth session's champion):
#   fp32 (torch)                   130.5 docs/s, accuracy 0.8610 (FPB 0.8646, tweets 0.8595)
#   int8 (torch, per tensor)       203.7 docs/s, accuracy 0.8602 (FPB 0.8490, -1.6 points); same label 95.4%
#   onnx-int8 (per channel, first  165.1 docs/s, accuracy 0.8602 (FPB 0.8568, -0.8 points); same label 99.3%
#     two feed-forward blocks fp32)
# Neither int8 path keeps FPB within the per-source budget (decide), so fp32 is the default there.
# On 2 vCPUs of an Intel Xeon with AMX (ninth session's champion, BENCHMARKS.md):
#   fp32 163.2 docs/s, accuracy 0.8528 (FPB 0.8438, tweets 0.8564)
#   bf16 498.2 docs/s, accuracy 0.8520 (FPB 0.8438, tweets 0.8553); same label 99.93%, none changed by batching
#   int8 387.0 docs/s (FPB -2.1 points); onnx-int8 283.9 docs/s (within the budget, slower than bf16)
# On 2 vCPUs of an AMD EPYC with AVX512_BF16 but no AMX (nineteenth session, 2026-11-30; that machine's
# first model, v20261130-181046-10e4):
#   fp32 169.3 docs/s, accuracy 0.8558 (FPB 0.8385, tweets 0.8627)
#   bf16 301.8 docs/s, the same accuracy; same label 100%, 1 label of 1338 changed by batching
#   int8 417.1 docs/s (tweets -1.2 points); onnx-int8 304.1 docs/s (same accuracy; 0.6% changed by batching)
# so ``auto`` is bf16 where the CPU has bf16 dot products in hardware, AMX or AVX512_BF16
# (default_quantize); int8 and onnx-int8 stay opt-in.
MAX_ACCURACY_LOSS = 0.005
VARIANTS: tuple[tuple[str, str | None], ...] = (("fp32", None), ("int8", "int8"), ("onnx-int8", "onnx-int8"),
                                                ("bf16", "bf16"))
QUANTIZED = tuple(q for _, q in VARIANTS if q)
CHOICES = ("auto", "none", *QUANTIZED)


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware: Intel AMX tiles, or the AVX512_BF16
    dot products of AMD Zen 4 and Intel Cooper Lake onwards. Elsewhere (AVX2 only) torch emulates
    bf16, which is slower than fp32, so bf16 pays only here."""
    import torch

    # torch's own tests, the ones oneDNN's kernel choice follows
    checks = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(check is not None and check() for check in checks)


def default_quantize() -> str | None:
    """What ``auto`` means on this machine: bf16 where the CPU has bf16 hardware, else fp32 (measured above)."""
    return "bf16" if native_bf16() else None


def resolve_quantize(setting: str | None) -> str | None:
    """``auto`` → the measured default; ``none`` → None; ``int8`` / ``onnx-int8`` / ``bf16`` as they are."""
    if setting in (None, "none"):
        return None
    if setting == "auto":
        return default_quantize()
    if setting in QUANTIZED:
        return setting
    raise ValueError(f"quantisation must be one of {', '.join(CHOICES)}, not {setting!r}")


def decide(fp32: dict[str, Any], quantized: dict[str, Any]) -> bool:
    """Whether a quantised variant could be the default: faster, and at most MAX_ACCURACY_LOSS of
    accuracy lost, overall and on each source measured (``by_source``): every held-out set is
    judged on its own, so a loss may not hide in the average."""
    if quantized["docs_per_s"] <= fp32["docs_per_s"]:
        return False
    pairs = [(fp32["accuracy"], quantized["accuracy"])]
    pairs += [(acc, quantized.get("by_source", {}).get(source, 0.0)) for source, acc in fp32.get("by_source", {}).items()]
    return all(before - after <= MAX_ACCURACY_LOSS for before, after in pairs)


def recommended(result: dict[str, Any]) -> str:
    """The fastest variant that passes :func:`decide` against fp32, else ``fp32``."""
    passing = [name for name, _ in VARIANTS[1:] if name in result and decide(result["fp32"], result[name])]
    return max(passing, key=lambda name: result[name]["docs_per_s"], default="fp32")


def batching_caveat(result: dict[str, Any]) -> str | None:
    """What the recommendation leaves out: a recommended variant whose labels depend on the batch. The
    rule above is the model issue's (speed, accuracy); the stream adds that a document scored again (a
    replay, a re-score) should get the same label, which is why ``auto`` never picks a dynamic int8 path."""
    name = result["recommended"]
    share = result.get(name, {}).get("changed_by_batching", 0.0)
    if name == "fp32" or not share:
        return None
    return (f"{name} gave {share:.2%} of these texts another label when their batch-mates changed; fp32 gives each "
            f"text one label, so `auto` keeps fp32 (or bf16 on bf16 hardware) and {name} stays your choice")


def changed_by_batching(scorer: Any, texts: Sequence[str], together: Sequence[str], seed: int = 1) -> float:
    """Share of the labels ``together`` (the scorer's, all texts in one call) that change when the same texts come in
    calls of one batch each, in random company, as the stream's batches do. Dynamic int8 takes one input
    scale per batch, so a text's rounding depends on its batch-mates; fp32 is independent of them."""
    import random

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    changed = 0
    for start in range(0, len(order), scorer.batch_size):
        part = order[start : start + scorer.batch_size]
        changed += sum(s.label != together[i] for i, s in zip(part, scorer.score([texts[i] for i in part])))
    return changed / max(len(texts), 1)


def compare(model: str | Path, texts: Sequence[str], labels: Sequence[str], *, sources: Sequence[str] | None = None,
            registry: Any = None, batch_size: int = 64, max_length: int = 128,
            threads: int | None = None) -> dict[str, Any]:
    """docs/s, accuracy and macro-F1 of each variant on the same texts (and accuracy per source)."""
    from model.evaluation import by_source, metrics, predicted_labels
    from model.scorer import Scorer

    result: dict[str, Any] = {"n": len(texts), "batch_size": batch_size}
    reference: list[str] = []
    for name, quantize in VARIANTS:
        scorer = Scorer.load(model, registry=registry, device="cpu", batch_size=batch_size,
                             max_length=max_length, quantize=quantize, threads=threads)
        scorer.score(list(texts[:batch_size]))  # warm-up: first-call allocations are not throughput
        start = time.perf_counter()
        probs = scorer.predict_proba(list(texts))
        elapsed = time.perf_counter() - start
        preds = predicted_labels(probs)
        overall = metrics(list(labels), preds)
        if name == "fp32":  # VARIANTS[0]: the labels the others are compared with
            reference = preds
        # Agreement with fp32 needs no labels and bounds the accuracy a variant can lose.
        result[name] = {"docs_per_s": len(texts) / elapsed, "accuracy": overall["accuracy"],
                        "macro_f1": overall["macro_f1"], "seconds": elapsed,
                        "agreement_with_fp32": sum(a == b for a, b in zip(preds, reference)) / max(len(preds), 1)}
        if sources is not None:
            result[name]["by_source"] = {source: figures["accuracy"]
                                         for source, figures in by_source(labels, preds, sources).items()}
        result[name]["changed_by_batching"] = changed_by_batching(scorer, texts, preds)
        result["model_version"] = scorer.version
    result["int8_recommended"] = decide(result["fp32"], result["int8"])
    result["recommended"] = recommended(result)
    return result
