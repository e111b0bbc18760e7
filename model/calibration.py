"""Calibration: a confidence of 0.9 that is right about nine times in ten, and labels in the
proportions the model will meet.

A fine-tuned classifier is over-confident: the champion's validation confidences were 8 points
above its accuracy on average (ECE 0.080). One temperature T divides the logits before the softmax
(Guo et al., "On Calibration of Modern Neural Networks", 2017). The order of the logits stays, so
no label changes; only how sure the model says it is, and with it ``score`` and ``confidence``,
which alert rules compare with thresholds.

Training weighs the rare labels up (``model.data.class_weights``), which leaves the model calling
them more often than they occur. A bias per label, added to the divided logits and fitted with T
("bias-corrected temperature scaling", Alexandari et al., ICML 2020), takes that back, and does
change labels. It is kept only where it paid on rows it was not fitted to: :func:`calibrate` fits
it on one half of the rows and counts the labels it gets right on the other half, over
:data:`BIAS_SPLITS` random halvings, and keeps it if it won in three quarters of them (:func:`bias_pays`).

Training calibrates on its validation split and stores T and the biases in the model's config
(:data:`CONFIG_KEY`, :data:`BIAS_KEY`); the scorer applies them (torch and ONNX alike). A model
without them scores with T = 1 and no bias, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from finsent.schemas import LABELS

CONFIG_KEY = "finsent_temperature"
BIAS_KEY = "finsent_logit_bias"  # {label: bias}; neutral's is 0
BOUNDS = (0.05, 20.0)
BIAS_BOUND = 5.0
BIAS_SPLITS = 20  # halvings that judge a bias: 10 random permutations, each half fitted once
BiasMode = Literal["auto", "on", "off"]
_FLOOR = 1e-12  # log(0) guard: softmax in float32 rounds a very unlikely label to 0


def temperature_of(config: Any) -> float:
    """The temperature a model's config carries, 1.0 when it has none."""
    return float(getattr(config, CONFIG_KEY, None) or 1.0)


def bias_of(config: Any) -> list[float]:
    """The per-label biases a model's config carries, in LABELS order; zeros when it has none."""
    stored = getattr(config, BIAS_KEY, None) or {}
    return [float(stored.get(label, 0.0)) for label in LABELS]


def _log_probs(probs: Sequence[Sequence[float]]) -> Any:
    import numpy as np

    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _FLOOR, 1.0))


def with_calibration(probs: Sequence[Sequence[float]], temperature: float,
                     bias: Sequence[float] | None) -> list[list[float]]:
    """Rows of probabilities as softmax(logits / T + bias) gives them (``bias`` in LABELS order).

    log p differs from the logits by a constant per row, which the softmax ignores."""
    from scipy.special import softmax

    return softmax(_log_probs(probs) / temperature + (0.0 if bias is None else list(bias)), axis=1).tolist()


def _nll(log_p: Any, truth: Any, temperature: float, bias: Any = 0.0) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(log_p / temperature + bias, axis=1)[range(len(truth)), truth].mean())


def negative_log_likelihood(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """Mean −log P(true label): what :func:`fit_temperature` minimises (lower is better calibrated
    and sharper; unlike ECE it needs no bins, so it does not jump on a few rows)."""
    return _nll(_log_probs(probs), list(labels), 1.0) if labels else 0.0


def fit_temperature(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` (the index of the
    true label in each row) under ``probs`` (rows scored with T = 1), within :data:`BOUNDS`."""
    import numpy as np
    from scipy.optimize import minimize_scalar

    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} rows of probabilities but {len(labels)} labels")
    if not labels:
        return 1.0
    log_p, truth = _log_probs(probs), list(labels)
    best = minimize_scalar(lambda log_t: _nll(log_p, truth, np.exp(log_t)),
                           bounds=(np.log(BOUNDS[0]), np.log(BOUNDS[1])), method="bounded")
    return float(np.exp(best.x))


def fit_temperature_and_bias(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> tuple[float, list[float]]:
    """T and the per-label biases (neutral's fixed at 0) of least negative log-likelihood."""
    return _fit_temperature_and_bias(_log_probs(probs), list(labels))


def _fit_temperature_and_bias(log_p: Any, truth: Any) -> tuple[float, list[float]]:
    import numpy as np
    from scipy.optimize import minimize

    free = [i for i, label in enumerate(LABELS) if label != "neutral"]

    def unpack(x: Any) -> tuple[float, Any]:
        bias = np.zeros(len(LABELS))
        bias[free] = x[1:]
        return float(np.exp(x[0])), bias

    bounds = [(np.log(BOUNDS[0]), np.log(BOUNDS[1]))] + [(-BIAS_BOUND, BIAS_BOUND)] * len(free)
    best = minimize(lambda x: _nll(log_p, truth, *unpack(x)), np.zeros(1 + len(free)), method="L-BFGS-B",
                    bounds=bounds)
    temperature, bias = unpack(best.x)
    return temperature, bias.tolist()


def bias_gains(probs: Sequence[Sequence[float]], labels: Sequence[int], splits: int = BIAS_SPLITS,
               seed: int = 0) -> list[float]:
    """Accuracy with the bias minus without it, on the half of the rows it was not fitted to, for
    each of ``splits`` halvings."""
    import numpy as np

    log_p, truth = _log_probs(probs), np.asarray(labels)
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(splits // 2):
        order = rng.permutation(len(truth))
        halves = order[: len(truth) // 2], order[len(truth) // 2:]
        for fit_on, judge_on in (halves, halves[::-1]):
            temperature, bias = _fit_temperature_and_bias(log_p[fit_on], truth[fit_on])
            with_bias = (log_p[judge_on] / temperature + bias).argmax(axis=1)
            without = log_p[judge_on].argmax(axis=1)  # T alone changes no label
            gains.append(float((with_bias == truth[judge_on]).mean() - (without == truth[judge_on]).mean()))
    return gains


def bias_pays(gains: Sequence[float]) -> bool:
    """More labels right on average, and in at least three quarters of the halvings (a bias that
    changes next to no label gains 0 in most of them, and is not kept)."""
    return bool(gains) and sum(gains) > 0 and sum(g > 0 for g in gains) >= 0.75 * len(gains)


def calibrate(probs: Sequence[Sequence[float]], labels: Sequence[str], *, bias: BiasMode = "auto") -> dict[str, Any]:
    """Fit the temperature (and, if it pays or ``bias="on"``, the biases) to rows scored with T = 1
    and no bias (``labels``: names in LABELS, the rows' order), and say what it changes: accuracy,
    ECE and negative log-likelihood before and after, on these rows."""
    from statistics import mean

    from model.evaluation import expected_calibration_error, predicted_labels

    truth = [LABELS.index(label) for label in labels]
    temperature, fitted_bias = fit_temperature(probs, truth), None
    check: dict[str, Any] = {"mode": bias}
    keep = bias == "on"
    if bias == "auto" and len(truth) >= 2 * len(LABELS):  # fewer rows cannot be halved into a judgement
        gains = bias_gains(probs, truth)
        check |= {"mean_gain": mean(gains), "splits": len(gains), "splits_won": sum(g > 0 for g in gains),
                  "splits_lost": sum(g < 0 for g in gains)}
        keep = bias_pays(gains)
    if keep:
        temperature, fitted_bias = fit_temperature_and_bias(probs, truth)
    check["kept"] = fitted_bias is not None
    calibrated = with_calibration(probs, temperature, fitted_bias)

    def figures(rows: Sequence[Sequence[float]]) -> dict[str, float]:
        correct = [p == t for p, t in zip(predicted_labels(rows), labels)]
        return {"accuracy": sum(correct) / len(correct) if correct else 0.0,
                "ece": expected_calibration_error([max(p) for p in rows], correct),
                "nll": negative_log_likelihood(rows, truth)}

    before, after = figures(probs), figures(calibrated)
    return {"temperature": temperature, "bias": dict(zip(LABELS, fitted_bias)) if fitted_bias else None,
            "bias_check": check, "n": len(truth)} | {
        f"{name}_{when}": value for when, numbers in (("before", before), ("after", after))
        for name, value in numbers.items()}
