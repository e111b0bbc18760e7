"""Classification metrics: accuracy with its 95% interval, macro-F1 (over the labels the data holds),
per-class precision/recall/F1, confusion matrix, expected calibration error (ECE) and n, overall and per source.
``metrics`` and ``by_source`` are pure; ``evaluate`` runs a scorer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from finsent.schemas import LABELS

ECE_BINS = 10


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """Σ_b |B_b|/n · |accuracy(B_b) − mean confidence(B_b)| over equal-width confidence bins."""
    n = len(confidences)
    if n == 0:
        return 0.0
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        # The first bin is closed on the left so a confidence of exactly 0 is counted.
        members = [i for i, c in enumerate(confidences) if (lo < c <= hi) or (b == 0 and c == lo)]
        if members:
            acc = sum(bool(correct[i]) for i in members) / len(members)
            conf = sum(confidences[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


def accuracy_interval(correct: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy of ``correct`` out of ``n``: how far the figure
    could move on another sample of the same size (about ±2 points at n=1000, ±3.5 at n=384)."""
    from scipy.stats import binomtest

    interval = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def metrics(y_true: Sequence[str], y_pred: Sequence[str], probs: Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    """Metrics over LABELS. ``probs`` rows are in LABELS order; without them ECE is omitted."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    labels = list(LABELS)
    n = len(y_true)
    if n == 0:
        return {"n": 0}
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    # Averaged over the labels the data holds (as retrain.drift's monitor does): a label with no row has F1 0 however
    # well the model does, so a perfect model on a file of positives and negatives scored 0.67. Predicting an absent
    # label still costs, as lost recall of the true one.
    held = [k for k, label in enumerate(labels) if support[k]]
    result: dict[str, Any] = {
        "n": n,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci95": list(accuracy_interval(sum(t == p for t, p in zip(y_true, y_pred)), n)),
        "macro_f1": float(sum(f1[k] for k in held) / len(held)),
        "per_class": {
            label: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                    "support": int(support[k])}
            for k, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": labels,
            "rows_true_cols_pred": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
    }
    if len(held) < len(labels):
        result["macro_f1_labels"] = [labels[k] for k in held]
    if probs is not None:
        confidences = [max(p) for p in probs]
        result["ece"] = expected_calibration_error(confidences, [t == p for t, p in zip(y_true, y_pred)])
    return result


def by_source(y_true: Sequence[str], y_pred: Sequence[str], sources: Sequence[str],
              probs: Sequence[Sequence[float]] | None = None) -> dict[str, dict[str, Any]]:
    """The :func:`metrics` of each source: every held-out set is judged on its own."""
    rows: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        rows.setdefault(source, []).append(i)
    return {source: metrics([y_true[i] for i in idx], [y_pred[i] for i in idx],
                            [probs[i] for i in idx] if probs is not None else None)
            for source, idx in sorted(rows.items())}


def predicted_labels(probs: Sequence[Sequence[float]]) -> list[str]:
    """The most probable label of each row of probabilities (in LABELS order)."""
    return [LABELS[max(range(len(LABELS)), key=p.__getitem__)] for p in probs]


def evaluate(scorer: Any, texts: Sequence[str], labels: Sequence[str],
             sources: Sequence[str] | None = None) -> dict[str, Any]:
    """Score ``texts`` with ``scorer`` and compare with ``labels`` (already normalised); with
    ``sources`` of more than one kind, the figures of each too (``by_source``)."""
    return scored_metrics(scorer.predict_proba(list(texts)), labels, sources)


def scored_metrics(probs: Sequence[Sequence[float]], labels: Sequence[str],
                   sources: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`evaluate`'s figures from probabilities already computed (LABELS order, one row per label)."""
    preds = predicted_labels(probs)
    result = metrics(list(labels), preds, probs)
    if sources is not None and len(set(sources)) > 1:
        result["by_source"] = by_source(list(labels), preds, list(sources), probs)
    return result


def summary_lines(validation: dict[str, Any]) -> list[str]:
    """What a person reads of a training run's validation metrics: the overall line, then one per source."""
    if not validation:
        return ["validation: none (no validation split)"]
    m = validation
    lines = [f"validation: n={m['n']} accuracy={m['accuracy']:.4f} macro_f1={m['macro_f1']:.4f} ece={m['ece']:.4f}"]
    for source, sm in m.get("by_source", {}).items():
        lines.append(f"  {source}: n={sm['n']} accuracy={sm['accuracy']:.4f} macro_f1={sm['macro_f1']:.4f}")
    return lines
