"""Distribution distances and classification figures the drift monitors and decisions share.

Pure functions over counts and label lists; no I/O, no model.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from finsent.schemas import LABELS

_EPS = 1e-6
_TOKEN = re.compile(r"[a-z0-9$][a-z0-9$'.-]*", re.IGNORECASE)


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; cheap and model-independent (input drift must not need the model)."""
    return [t.strip(".'-").lower() for t in _TOKEN.findall(text) if t.strip(".'-")]


def proportions(counts: Mapping[str, float], keys: Sequence[str]) -> list[float]:
    """Smoothed shares of ``keys`` in ``counts`` (an empty bucket never gives log(0))."""
    total = sum(counts.get(k, 0.0) for k in keys) + _EPS * len(keys)
    return [(counts.get(k, 0.0) + _EPS) / total for k in keys]


def psi(reference: Mapping[str, float], current: Mapping[str, float], keys: Sequence[str] | None = None) -> float:
    """Population stability index of two histograms (rule of thumb: > 0.25 is a big shift)."""
    keys = list(keys) if keys is not None else sorted(set(reference) | set(current))
    p, q = proportions(reference, keys), proportions(current, keys)
    return sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))


def js_divergence(reference: Mapping[str, float], current: Mapping[str, float], keys: Sequence[str] | None = None) -> float:
    """Jensen–Shannon divergence in bits: 0 for equal histograms, 1 for disjoint ones."""
    keys = list(keys) if keys is not None else sorted(set(reference) | set(current))
    p, q = proportions(reference, keys), proportions(current, keys)
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: list[float], y: list[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, y, strict=True) if a > 0)

    return max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))


def length_bucket(n_tokens: int) -> str:
    """Coarse, fixed length buckets so reference and window histograms always line up."""
    for upper in (5, 10, 20, 40, 80, 160):
        if n_tokens <= upper:
            return f"<={upper}"
    return ">160"


LENGTH_BUCKETS: tuple[str, ...] = ("<=5", "<=10", "<=20", "<=40", "<=80", "<=160", ">160")


def entropy(probabilities: Mapping[str, float]) -> float:
    """Normalised entropy in [0, 1] of one prediction (1 = the model has no idea)."""
    values = [max(0.0, float(probabilities.get(label, 0.0))) for label in LABELS]
    total = sum(values) or 1.0
    h = -sum((v / total) * math.log(v / total) for v in values if v > 0)
    return h / math.log(len(LABELS))


def margin(probabilities: Mapping[str, float]) -> float:
    """Top probability minus the runner-up (0 = a coin toss between two labels)."""
    top = sorted((float(probabilities.get(label, 0.0)) for label in LABELS), reverse=True)
    return top[0] - top[1]


def accuracy_and_macro_f1(y_true: Iterable[str], y_pred: Iterable[str],
                          labels: Iterable[str] | None = None) -> tuple[float, float]:
    """Accuracy, and macro-F1 over ``labels`` (default: those present in either list, sklearn's convention)."""
    pairs = list(zip(y_true, y_pred, strict=True))
    if not pairs:
        return 0.0, 0.0
    correct = sum(t == p for t, p in pairs)
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for t, p in pairs:
        if t == p:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    averaged = sorted(labels) if labels is not None else sorted({t for t, _ in pairs} | {p for _, p in pairs})
    f1s = []
    for label in averaged:
        denominator = 2 * tp[label] + fp[label] + fn[label]
        f1s.append(2 * tp[label] / denominator if denominator else 0.0)
    return correct / len(pairs), sum(f1s) / len(f1s) if f1s else 0.0


def confusion_pairs(confusion: Mapping[str, Sequence]) -> tuple[list[str], list[str]]:
    """The (true, predicted) label lists a confusion matrix counts (``model.evaluation.metrics``'
    ``confusion_matrix``: ``labels`` and ``rows_true_cols_pred``), so figures can be computed again from it."""
    labels, rows = confusion["labels"], confusion["rows_true_cols_pred"]
    true: list[str] = []
    pred: list[str] = []
    for truth, row in zip(labels, rows, strict=True):
        for predicted, count in zip(labels, row, strict=True):
            true += [truth] * int(count)
            pred += [predicted] * int(count)
    return true, pred
