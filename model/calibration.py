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


def negative_log_likelihood(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """Mean −log P(true label): what :func:`fit_temperature` minimises (lower is better calibrated
    and sharper; unlike ECE it needs no bins, so it does not jump on a few rows)."""
    import numpy as np

    return float(-_log_probs(probs)[np.arange(len(labels)), np.asarray(labels)].mean()) if labels else 0.0


def fit_temperature(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` (the index of the
    true label in each row) under ``probs`` (rows scored with T = 1), within :data:`BOUNDS`."""
    import numpy as np
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} rows of probabilities but {len(labels)} labels")
    if not labels:
        return 1.0
    log_p = _log_probs(probs)
    rows, truth = np.arange(len(labels)), np.asarray(labels)

    def nll(log_t: float) -> float:
        return float(-log_softmax(log_p / np.exp(log_t), axis=1)[rows, truth].mean())

    best = minimize_scalar(nll, bounds=(np.log(BOUNDS[0]), np.log(BOUNDS[1])), method="bounded")
    return float(np.exp(best.x))


def calibrate(probs: Sequence[Sequence[float]], labels: Sequence[str]) -> dict[str, Any]:
    """Fit the temperature to rows scored with T = 1 (``labels``: names in LABELS, the rows'
    order) and say what it changes: ECE and negative log-likelihood before and after, on these rows."""
    from model.evaluation import expected_calibration_error

    truth = [LABELS.index(label) for label in labels]
    temperature = fit_temperature(probs, truth)
    calibrated = with_temperature(probs, temperature)

    def ece(rows: Sequence[Sequence[float]]) -> float:
        # The label is the same before and after (the order of the logits stays).
        return expected_calibration_error([max(p) for p in rows],
                                          [max(range(len(p)), key=p.__getitem__) == t for p, t in zip(probs, truth)])

    return {"temperature": temperature, "n": len(truth), "ece_before": ece(probs), "ece_after": ece(calibrated),
            "nll_before": negative_log_likelihood(probs, truth), "nll_after": negative_log_likelihood(calibrated, truth)}
