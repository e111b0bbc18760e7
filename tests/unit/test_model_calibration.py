import numpy as np
import pytest
from scipy.special import softmax

from finsent.schemas import LABELS
from model.calibration import (
    BOUNDS, bias_of, bias_pays, calibrate, fit_temperature, fit_temperature_and_bias, negative_log_likelihood,
    temperature_of, with_calibration,
)
from model.evaluation import expected_calibration_error


def _overconfident(n=20000, true_temperature=2.0, seed=0):
    """Logits whose labels were drawn at ``true_temperature``: scored at T = 1, they are over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, 3))
    truth = np.array([rng.choice(3, p=row) for row in softmax(logits / true_temperature, axis=1)])
    return softmax(logits, axis=1).tolist(), truth.tolist()


def _ece(probs, truth):
    return expected_calibration_error([max(p) for p in probs], [int(np.argmax(p)) == t for p, t in zip(probs, truth)])


def test_fit_finds_the_temperature_the_labels_were_drawn_at():
    probs, truth = _overconfident()
    temperature = fit_temperature(probs, truth)
    assert temperature == pytest.approx(2.0, abs=0.1)
    calibrated = with_calibration(probs, temperature, None)
    assert _ece(calibrated, truth) < 0.02 < _ece(probs, truth)
    assert negative_log_likelihood(calibrated, truth) < negative_log_likelihood(probs, truth)
    assert negative_log_likelihood([[0.5, 0.25, 0.25]], [1]) == pytest.approx(np.log(4))
    assert [int(np.argmax(p)) for p in calibrated] == [int(np.argmax(p)) for p in probs]  # no label changes


def test_without_a_bias_calibration_is_the_softmax_of_the_divided_logits():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    probs = softmax(logits, axis=1)
    np.testing.assert_allclose(with_calibration(probs, 1.0, None), probs, atol=1e-12)
    np.testing.assert_allclose(with_calibration(probs, 1.7, None), softmax(logits / 1.7, axis=1), atol=1e-12)


def test_fit_stays_within_bounds_and_checks_its_input():
    sure_and_wrong = [[0.98, 0.01, 0.01]] * 10  # the likelihood only grows as T grows (towards uniform)
    assert fit_temperature(sure_and_wrong, [1] * 10) == pytest.approx(BOUNDS[1], rel=0.01)
    assert fit_temperature([], []) == 1.0
    with pytest.raises(ValueError, match="2 rows of probabilities but 1 labels"):
        fit_temperature([[0.5, 0.25, 0.25]] * 2, [0])


def test_a_config_without_a_temperature_scores_as_before():
    class Config:
        pass

    assert temperature_of(Config()) == 1.0
    config = Config()
    config.finsent_temperature = 1.6
    assert temperature_of(config) == 1.6


def test_calibrate_reports_what_the_temperature_changes():
    probs, truth = _overconfident(n=3000)
    figures = calibrate(probs, [LABELS[t] for t in truth])
    assert figures["n"] == 3000 and figures["temperature"] == pytest.approx(fit_temperature(probs, truth))
    assert figures["ece_after"] < figures["ece_before"] and figures["nll_after"] < figures["nll_before"]
    assert figures["ece_before"] == pytest.approx(_ece(probs, truth))


def _prior_shifted(n=3000, shift=(2.0, 0.0, 1.6), seed=0):
    """Over-confident logits that also favour negative and positive by ``shift``, as a class-weighted
    loss leaves them: the labels were drawn from the logits without the shift, at T = 2."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, 3))
    truth = [int(rng.choice(3, p=row)) for row in softmax(logits / 2.0, axis=1)]
    return softmax(logits + np.array(shift), axis=1).tolist(), truth


def test_biases_that_pay_on_held_out_halves_are_kept_and_undo_the_shift():
    probs, truth = _prior_shifted()
    temperature, bias = fit_temperature_and_bias(probs, truth)
    assert temperature == pytest.approx(2.0, abs=0.15)
    assert bias == pytest.approx([-1.0, 0.0, -0.8], abs=0.15)  # the shift, divided by T
    figures = calibrate(probs, [LABELS[t] for t in truth])
    check = figures["bias_check"]
    assert check["kept"] is True and check["splits"] == 20 and check["splits_won"] >= 15
    assert figures["bias"] == {label: pytest.approx(b) for label, b in zip(LABELS, bias)}
    assert figures["accuracy_after"] > figures["accuracy_before"] + 0.01
    assert figures["nll_after"] < figures["nll_before"]
    np.testing.assert_allclose(with_calibration(probs, temperature, bias),
                               softmax(np.log(probs) / temperature + np.array(bias), axis=1), atol=1e-9)


def test_a_bias_that_does_not_pay_is_dropped_unless_forced():
    probs, truth = _overconfident(n=3000)  # no shift to undo
    labels = [LABELS[t] for t in truth]
    auto = calibrate(probs, labels)
    assert auto["bias"] is None and auto["bias_check"]["kept"] is False
    assert auto["temperature"] == pytest.approx(fit_temperature(probs, truth))
    assert auto["accuracy_after"] == auto["accuracy_before"]  # T alone changes no label
    assert calibrate(probs, labels, bias="on")["bias"] is not None
    off = calibrate(probs, labels, bias="off")
    assert off["bias"] is None and "splits" not in off["bias_check"]
    assert not bias_pays([0.0] * 14 + [0.01] * 6)  # a bias that changes next to nothing
    assert not bias_pays([-0.01] * 6 + [0.002] * 14) and bias_pays([0.01] * 16 + [-0.001] * 4)


def test_a_config_without_biases_scores_as_before():
    class Config:
        pass

    assert bias_of(Config()) == [0.0, 0.0, 0.0]
    config = Config()
    config.finsent_logit_bias = {"negative": -0.6, "neutral": 0.0, "positive": -0.7}
    assert bias_of(config) == [-0.6, 0.0, -0.7]
