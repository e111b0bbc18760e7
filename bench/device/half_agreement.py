"""What half precision on the GPU costs: a trained version scored in fp16 on CUDA and in fp32 on
the CPU, on the validation rows its training held out (the same split: same files, seed, fraction).

    python -m bench.device.half_agreement --version V --data A.csv --data B.csv [--seed 13]

Prints one JSON object: n, each precision's accuracy and macro-F1 (overall and by source), how
many labels differ, and the largest difference in score (P(pos) - P(neg)).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def compare(version: str, data: list[Path], seed: int, val_fraction: float, gpu: str = "cuda") -> dict:
    """``gpu`` is the device of the half-precision side; ``cpu`` there makes a dry run on a machine without one."""
    from finsent.schemas import LABELS
    from finsent.settings import Settings
    from model.data import load, stratified_split
    from model.evaluation import predicted_labels, scored_metrics
    from model.registry import open_registry
    from model.scorer import Scorer

    registry = open_registry(Settings(), mirror=False)
    _, val_set = stratified_split(load(data).examples, val_fraction, seed)
    texts, labels, sources = [e.text for e in val_set], [e.label for e in val_set], [e.source for e in val_set]
    out: dict = {"version": version, "n": len(texts)}
    probs = {}
    for name, device in (("gpu", gpu), ("cpu", "cpu")):
        scorer = Scorer.load(version, registry=registry, device=device, batch_size=256)
        probs[name] = scorer.predict_proba(texts)
        result = scored_metrics(probs[name], labels, sources)
        out[name] = {"device": scorer.device, "precision": scorer.precision,
                     "accuracy": result["accuracy"], "macro_f1": result["macro_f1"],
                     "by_source": {s: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
                                   for s, m in result.get("by_source", {}).items()}}
    half, full = predicted_labels(probs["gpu"]), predicted_labels(probs["cpu"])
    out["labels_differ"] = sum(a != b for a, b in zip(half, full))
    neg, pos = LABELS.index("negative"), LABELS.index("positive")
    out["max_score_diff"] = max(abs((h[pos] - h[neg]) - (f[pos] - f[neg]))
                                for h, f in zip(probs["gpu"], probs["cpu"]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--gpu", default="cuda", help="the half-precision side's device (cpu: a dry run)")
    args = parser.parse_args(argv)
    print(json.dumps(compare(args.version, args.data, args.seed, args.val_fraction, args.gpu)))


if __name__ == "__main__":
    main()
