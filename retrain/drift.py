"""Drift monitors as pure objects, in the style of river: feed ``update(x)``, read ``drift_detected``.

Each monitor also exposes ``statistic`` (what it compares with ``threshold``; ``None`` until it
has seen enough data) and ``details()`` (figures worth recording). Detection is latched: once a
monitor fires it stays fired until ``reset()``, because a check reports the state of a whole
window, not a single step.

- :class:`PredictionDrift` — Jensen–Shannon divergence of predicted labels, window vs reference.
- :class:`PageHinkley` / :func:`confidence_monitor` — a sustained fall of the top probability.
- :class:`InputDrift` — rise of the out-of-vocabulary token rate, plus PSI of text lengths.
- :class:`PerformanceDrift` — the champion's macro-F1 on fresh labels vs its known baseline.
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Protocol

from finsent.schemas import LABELS
from retrain.statistics import LENGTH_BUCKETS, accuracy_and_macro_f1, js_divergence, length_bucket, psi, tokens


class DriftMonitor(Protocol):
    name: str
    threshold: float

    def update(self, x: Any) -> None: ...

    @property
    def drift_detected(self) -> bool: ...

    @property
    def statistic(self) -> float | None: ...

    def details(self) -> dict[str, Any]: ...


class PredictionDrift:
    """The first ``reference_size`` labels form the reference; the last ``window_size`` the window."""

    name = "prediction"

    def __init__(self, reference_size: int = 500, window_size: int = 300, threshold: float = 0.05) -> None:
        if reference_size < 1 or window_size < 1:
            raise ValueError("reference_size and window_size must be positive")
        self.reference_size, self.window_size, self.threshold = reference_size, window_size, threshold
        self.reset()

    def reset(self) -> None:
        self._reference: Counter[str] = Counter()
        self._window: deque[str] = deque(maxlen=self.window_size)
        self._fired = False

    def update(self, x: str) -> None:
        if x not in LABELS:
            raise ValueError(f"unknown label {x!r}; expected one of {list(LABELS)}")
        if sum(self._reference.values()) < self.reference_size:
            self._reference[x] += 1
            return
        self._window.append(x)
        stat = self.statistic
        if stat is not None and stat > self.threshold:
            self._fired = True

    @property
    def statistic(self) -> float | None:
        if len(self._window) < self.window_size:
            return None
        return js_divergence(self._reference, Counter(self._window), LABELS)

    @property
    def drift_detected(self) -> bool:
        return self._fired

    def details(self) -> dict[str, Any]:
        ref_total = sum(self._reference.values()) or 1
        win = Counter(self._window)
        win_total = len(self._window) or 1
        out: dict[str, Any] = {"reference_n": sum(self._reference.values()), "window_n": len(self._window)}
        for label in LABELS:
            out[f"reference_{label}"] = round(self._reference[label] / ref_total, 4)
            out[f"window_{label}"] = round(win[label] / win_total, 4)
        return out


class PageHinkley:
    """Page–Hinkley test for a change in the mean of a stream.

    ``mode="down"`` detects a fall (what a losing model's confidence does), ``"up"`` a rise.
    ``delta`` is the magnitude of change tolerated; ``threshold`` (lambda) the evidence needed; both
    in units of ``scale``, which each deviation is divided by (the stream's standard deviation makes
    them standard deviations, so one pair of figures fits streams of any spread).
    """

    name = "page_hinkley"

    def __init__(self, min_instances: int = 30, delta: float = 0.005, threshold: float = 3.0,
                 mode: str = "down", scale: float = 1.0) -> None:
        if mode not in ("up", "down"):
            raise ValueError("mode must be 'up' or 'down'")
        if not scale > 0:
            raise ValueError("scale must be positive")
        self.min_instances, self.delta, self.threshold, self.mode = min_instances, delta, threshold, mode
        self.scale = scale
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self._mean = 0.0
        self._cum = 0.0
        self._extreme = 0.0
        self._peak = 0.0
        self._fired = False

    def update(self, x: float) -> None:
        x = float(x)
        self.n += 1
        self._mean += (x - self._mean) / self.n
        deviation = ((x - self._mean) if self.mode == "up" else (self._mean - x)) / self.scale
        self._cum += deviation - self.delta
        self._extreme = min(self._extreme, self._cum)
        value = self._cum - self._extreme
        if self.n >= self.min_instances:
            self._peak = max(self._peak, value)
            if value > self.threshold:
                self._fired = True

    @property
    def statistic(self) -> float | None:
        return self._peak if self.n >= self.min_instances else None

    @property
    def drift_detected(self) -> bool:
        return self._fired

    def details(self) -> dict[str, Any]:
        return {"n": self.n, "mean": round(self._mean, 6), "delta": self.delta, "mode": self.mode,
                "scale": round(self.scale, 6)}


MIN_SPREAD = 0.01  # a reference of (nearly) one repeated confidence would make any change count as infinite


def reference_spread(confidences: Sequence[float]) -> float:
    """The standard deviation of the reference's confidences (at least MIN_SPREAD): the unit of the
    confidence monitor's delta and threshold. A calibrated model's confidences spread widely (0.13 on the
    champion's validation rows, skewed down); in raw probability one delta and lambda (0.01, 3) let a stationary
    stream alarm on a quarter of checks at that spread, 1% at 0.09 and 79% at 0.19 (MODEL.md, drift monitor)."""
    return max(statistics.pstdev(confidences), MIN_SPREAD) if len(confidences) >= 2 else MIN_SPREAD


def confidence_monitor(min_instances: int = 30, delta: float = 0.005, threshold: float = 3.0,
                       scale: float = 1.0) -> PageHinkley:
    """Page–Hinkley on the top probability of each prediction, watching for a fall; ``delta`` and
    ``threshold`` in units of ``scale`` (the reference's spread, :func:`reference_spread`)."""
    monitor = PageHinkley(min_instances=min_instances, delta=delta, threshold=threshold, mode="down", scale=scale)
    monitor.name = "confidence"
    return monitor


class InputDrift:
    """Token statistics of raw texts: OOV rate against the reference vocabulary, and lengths.

    The baseline OOV rate is measured inside the reference (its last fifth against the vocabulary
    of its first four fifths), and the window is measured against that same vocabulary, so both
    rates suffer the same finite-sample bias. ``statistic`` is the rise of the OOV rate; the
    length PSI is a second trigger with its own threshold.
    """

    name = "input"

    def __init__(self, reference_size: int = 500, window_size: int = 300, threshold: float = 0.1,
                 length_threshold: float = 0.25, novel_tokens: int = 20) -> None:
        if reference_size < 5 or window_size < 1:
            raise ValueError("reference_size must be at least 5 and window_size positive")
        self.reference_size, self.window_size = reference_size, window_size
        self.threshold, self.length_threshold, self.novel_tokens = threshold, length_threshold, novel_tokens
        self.reset()

    def reset(self) -> None:
        self._reference: list[list[str]] = []
        self._vocab: set[str] | None = None
        self._baseline_oov = 0.0
        self._reference_lengths: Counter[str] = Counter()
        self._window: deque[list[str]] = deque(maxlen=self.window_size)
        self._fired = False
        self._cache: tuple[float, float] | None = None

    def update(self, x: str) -> None:
        toks = tokens(x)
        if self._vocab is None:
            self._reference.append(toks)
            self._reference_lengths[length_bucket(len(toks))] += 1
            if len(self._reference) >= self.reference_size:
                self._freeze_reference()
            return
        self._window.append(toks)
        self._cache = None
        if len(self._window) >= self.window_size:
            oov_rise, length_psi = self._figures()
            if oov_rise > self.threshold or length_psi > self.length_threshold:
                self._fired = True

    def _freeze_reference(self) -> None:
        cut = int(len(self._reference) * 0.8)
        self._vocab = {t for toks in self._reference[:cut] for t in toks}
        self._baseline_oov = self._oov_rate(self._reference[cut:])
        self._reference = []

    def _oov_rate(self, texts: Sequence[list[str]]) -> float:
        total = sum(len(t) for t in texts)
        if not total or self._vocab is None:
            return 0.0
        return sum(1 for toks in texts for t in toks if t not in self._vocab) / total

    def _figures(self) -> tuple[float, float]:
        if self._cache is None:
            lengths = Counter(length_bucket(len(t)) for t in self._window)
            self._cache = (self._oov_rate(self._window) - self._baseline_oov,
                           psi(self._reference_lengths, lengths, LENGTH_BUCKETS))
        return self._cache

    @property
    def statistic(self) -> float | None:
        if self._vocab is None or len(self._window) < self.window_size:
            return None
        return self._figures()[0]

    @property
    def drift_detected(self) -> bool:
        return self._fired

    def novel(self) -> list[str]:
        """The most frequent window tokens the reference never saw: the drifted region."""
        if self._vocab is None:
            return []
        counts = Counter(t for toks in self._window for t in toks if t not in self._vocab and len(t) > 1)
        return [t for t, c in counts.most_common(self.novel_tokens) if c >= 2]

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"window_n": len(self._window), "baseline_oov": round(self._baseline_oov, 6),
                               "length_threshold": self.length_threshold}
        if self.statistic is not None:
            oov_rise, length_psi = self._figures()
            out |= {"window_oov": round(oov_rise + self._baseline_oov, 6), "length_psi": round(length_psi, 6)}
        out["novel_tokens"] = self.novel()
        return out


class PerformanceDrift:
    """Macro-F1 of the champion on fresh labels; fires when it falls ``threshold`` below the baseline.

    ``update((true_label, predicted_label))``. ``reference`` is the champion's validation split as (true labels,
    predicted labels); without one the monitor only reports figures and never fires. Both sides are averaged over
    the labels the fresh labels hold, with the same function: fresh labels without a neutral one are judged on
    negative and positive, as is the baseline, instead of scoring 0 for the neutral F1 they cannot have (a
    perfect model would read 0.67 against a validation 0.8 and fire) or being let off the one the baseline has.
    """

    name = "performance"

    def __init__(self, reference: tuple[Sequence[str], Sequence[str]] | None, threshold: float = 0.1,
                 min_samples: int = 30) -> None:
        self.reference, self.threshold, self.min_samples = reference, threshold, min_samples
        self.reset()

    def reset(self) -> None:
        self._true: list[str] = []
        self._pred: list[str] = []

    def update(self, x: tuple[str, str]) -> None:
        truth, predicted = x
        self._true.append(truth)
        self._pred.append(predicted)

    def _labels(self) -> list[str]:
        return sorted(set(self._true)) or list(LABELS)

    @property
    def baseline(self) -> float | None:
        """The reference's macro-F1 over the labels the fresh labels hold."""
        if self.reference is None or not self.reference[0]:
            return None
        return accuracy_and_macro_f1(*self.reference, labels=self._labels())[1]

    def _macro_f1(self) -> float:
        return accuracy_and_macro_f1(self._true, self._pred, labels=self._labels())[1]

    @property
    def statistic(self) -> float | None:
        baseline = self.baseline
        if baseline is None or len(self._true) < self.min_samples:
            return None
        return baseline - self._macro_f1()

    @property
    def drift_detected(self) -> bool:
        stat = self.statistic
        return stat is not None and stat > self.threshold

    def details(self) -> dict[str, Any]:
        acc = accuracy_and_macro_f1(self._true, self._pred)[0]
        baseline = self.baseline
        details = {"n": len(self._true), "accuracy": round(acc, 6), "macro_f1": round(self._macro_f1(), 6),
                   "baseline_macro_f1": None if baseline is None else round(baseline, 6), "labels": self._labels(),
                   "min_samples": self.min_samples}
        if baseline is None:
            details["reason"] = "the model has no validation figures to compare with"
        elif len(self._true) < self.min_samples:
            details["reason"] = f"{len(self._true)} fresh labels, need {self.min_samples}"
        return details
