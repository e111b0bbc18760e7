"""Temperature scaling: a confidence of 0.9 that is right about nine times in ten.

A fine-tuned classifier is over-confident: the champion's validation confidences were 8 points
above its accuracy on average (ECE 0.080). One temperature T divides the logits before the softmax
(Guo et al., "On Calibration of Modern Neural Networks", 2017). The order of the logits stays, so
no label changes; only how sure the model says it is, and with it ``score`` and ``confidence``,
which alert rules compare with thresholds.

Training fits T on its validation split (:func:`fit_temperature`, the T of least negative
log-likelihood) and stores it in the model's config under :data:`CONFIG_KEY`; the scorer divides
by it (torch and ONNX alike). A model without it scores with T = 1, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from finsent.schemas import LABELS

CONFIG_KEY = "finsent_temperature"
BOUNDS = (0.05, 20.0)
_FLOOR = 1e-12  # log(0) guard: softmax in float32 rounds a very unlikely label to 0


def temperature_of(config: Any) -> float:
    """The temperature a model's config carries, 1.0 when it has none."""
    return float(getattr(config, CONFIG_KEY, None) or 1.0)


def _log_probs(probs: Sequence[Sequence[float]]) -> Any:
    import numpy as np

    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _FLOOR, 1.0))


def with_temperature(probs: Sequence[Sequence[float]], temperature: float) -> list[list[float]]:
    """Rows of probabilities as the same logits divided by ``temperature`` would give them.

    log p differs from the logits by a constant per row, which the softmax ignores."""
    from scipy.special import softmax

    return softmax(_log_probs(probs) / temperature, axis=1).tolist()


def _nll(log_p: Any, truth: Any, temperature: float) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(log_p / temperature, axis=1)[range(len(truth)), truth].mean())


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


def calibrate(probs: Sequence[Sequence[float]], labels: Sequence[str]) -> dict[str, Any]:
    """Fit the temperature to rows scored with T = 1 (``labels``: names in LABELS, the rows'
    order) and say what it changes: ECE and negative log-likelihood before and after, on these rows."""
    from model.evaluation import expected_calibration_error, predicted_labels

    truth = [LABELS.index(label) for label in labels]
    temperature = fit_temperature(probs, truth)
    calibrated = with_temperature(probs, temperature)
    # The same labels before and after (the order of the logits stays), so one list of hits serves both.
    correct = [p == t for p, t in zip(predicted_labels(probs), labels)]

    def ece(rows: Sequence[Sequence[float]]) -> float:
        return expected_calibration_error([max(p) for p in rows], correct)

    return {"temperature": temperature, "n": len(truth), "ece_before": ece(probs), "ece_after": ece(calibrated),
            "nll_before": negative_log_likelihood(probs, truth), "nll_after": negative_log_likelihood(calibrated, truth)}
