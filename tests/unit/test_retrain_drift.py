"""Drift monitors on seeded synthetic streams: stable streams stay quiet, drifting ones fire."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from finsent.settings import Settings
from retrain.conflicts import ResolvedLabel
from retrain.drift import InputDrift, PageHinkley, PerformanceDrift, PredictionDrift, confidence_monitor
from model.evaluation import metrics
from retrain.statistics import accuracy_and_macro_f1, confusion_pairs, entropy, js_divergence, margin, psi

LABELS = ["negative", "neutral", "positive"]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
WORDS = "shares rose fell company profit loss quarter revenue market stock earnings sales growth".split()
NEW_WORDS = "blockchain memecoin airdrop nft tokenomics staking defi rugpull hodl whale".split()


def labels_stream(rng: random.Random, weights: list[float], n: int) -> list[str]:
    return rng.choices(LABELS, weights=weights, k=n)


def sentence(rng: random.Random, vocab: list[str], n: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


@pytest.mark.parametrize("seed", range(5))
def test_prediction_drift_quiet_on_stable_stream(seed: int) -> None:
    rng = random.Random(seed)
    monitor = PredictionDrift(reference_size=400, window_size=200, threshold=0.02)
    for label in labels_stream(rng, [0.3, 0.5, 0.2], 2000):
        monitor.update(label)
    assert not monitor.drift_detected
    assert monitor.statistic is not None and monitor.statistic < 0.02


@pytest.mark.parametrize("seed", range(5))
def test_prediction_drift_fires_on_shift(seed: int) -> None:
    rng = random.Random(seed)
    monitor = PredictionDrift(reference_size=400, window_size=200, threshold=0.02)
    for label in labels_stream(rng, [0.3, 0.5, 0.2], 600):
        monitor.update(label)
    assert not monitor.drift_detected
    for label in labels_stream(rng, [0.6, 0.2, 0.2], 300):
        monitor.update(label)
    assert monitor.drift_detected
    assert monitor.details()["window_negative"] > monitor.details()["reference_negative"]


def test_prediction_drift_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        PredictionDrift().update("bullish")


def test_prediction_drift_needs_a_full_window() -> None:
    monitor = PredictionDrift(reference_size=10, window_size=10)
    for _ in range(15):
        monitor.update("neutral")
    assert monitor.statistic is None and not monitor.drift_detected


@pytest.mark.parametrize("seed", range(5))
def test_confidence_page_hinkley(seed: int) -> None:
    rng = random.Random(seed)
    stable = confidence_monitor(min_instances=30, delta=0.01, threshold=3.0)
    for _ in range(3000):
        stable.update(min(1.0, max(0.34, rng.gauss(0.85, 0.08))))
    assert not stable.drift_detected

    drifting = confidence_monitor(min_instances=30, delta=0.01, threshold=3.0)
    for _ in range(500):
        drifting.update(min(1.0, max(0.34, rng.gauss(0.85, 0.08))))
    assert not drifting.drift_detected
    for _ in range(300):
        drifting.update(min(1.0, max(0.34, rng.gauss(0.6, 0.1))))
    assert drifting.drift_detected
    assert drifting.statistic > 3.0


def test_page_hinkley_up_mode_and_reset() -> None:
    ph = PageHinkley(min_instances=5, delta=0.0, threshold=1.0, mode="up")
    for x in [0.0] * 50 + [1.0] * 10:
        ph.update(x)
    assert ph.drift_detected
    ph.reset()
    assert not ph.drift_detected and ph.statistic is None
    with pytest.raises(ValueError):
        PageHinkley(mode="sideways")


def test_page_hinkley_measures_deviations_in_units_of_its_scale() -> None:
    rng = random.Random(3)
    stream = [rng.gauss(0.8, 0.1) for _ in range(400)]
    plain, scaled = PageHinkley(delta=0.05, threshold=5.0), PageHinkley(delta=0.05, threshold=5.0, scale=0.25)
    for x in stream:
        plain.update(x)
        scaled.update(x * 0.25)
    assert scaled.statistic == pytest.approx(plain.statistic) and scaled.details()["scale"] == 0.25
    with pytest.raises(ValueError):
        PageHinkley(scale=0.0)


class DocsEs:
    """The two searches of a drift check: the reference (earliest first), then the window (newest first)."""

    def __init__(self, reference: list[float], window: list[float]) -> None:
        self.docs = {"asc": [self.doc(c) for c in reference], "desc": [self.doc(c) for c in reversed(window)]}

    @staticmethod
    def doc(confidence: float) -> dict:
        return {"text": "shares rose", "sentiment": {"label": "positive", "confidence": confidence}}

    def count(self, **_: object) -> dict:
        return {"count": len(self.docs["asc"]) + len(self.docs["desc"])}

    def search(self, *, size: int, sort: list, **_: object) -> dict:
        return {"hits": {"hits": [{"_source": d} for d in self.docs[sort[0]["scored_at"]][:size]]}}


def calibrated_confidences(rng: random.Random, n: int, fall: float = 0.0) -> list[float]:
    """Shaped like a calibrated model's top probabilities: most near 0.95, a long tail down to 0.4 (sd about 0.15)."""
    return [max(0.34, 0.97 - 0.8 * rng.betavariate(1.0, 3.0)) - fall for _ in range(n)]


def test_the_confidence_check_is_quiet_on_a_wide_stationary_stream_and_catches_a_fall() -> None:
    # With delta and lambda in raw probability (0.01, 3) a quarter of these stationary checks alarmed.
    from retrain.drift_check import _document_monitors

    s, alarms, caught = Settings(), [], []
    for seed in range(12):
        rng = random.Random(seed)
        reference = calibrated_confidences(rng, s.drift_reference_size)
        for fall, found in ((0.0, alarms), (0.1, caught)):
            window = calibrated_confidences(rng, s.drift_window_size, fall)
            ctx = SimpleNamespace(settings=s, es=DocsEs(reference, window))
            result = {r.monitor: r for r in _document_monitors(ctx, "v1")}["confidence"]
            found.append(result.drift_detected)
    assert (sum(alarms), sum(caught)) == (0, 12)


@pytest.mark.parametrize("seed", range(3))
def test_input_drift_oov_rise(seed: int) -> None:
    rng = random.Random(seed)
    stable = InputDrift(reference_size=300, window_size=200, threshold=0.1)
    for _ in range(900):
        stable.update(sentence(rng, WORDS, rng.randint(8, 20)))
    assert not stable.drift_detected
    assert abs(stable.statistic) < 0.05

    drifting = InputDrift(reference_size=300, window_size=200, threshold=0.1)
    for _ in range(400):
        drifting.update(sentence(rng, WORDS, rng.randint(8, 20)))
    for _ in range(200):
        drifting.update(sentence(rng, WORDS, 6) + " " + sentence(rng, NEW_WORDS, 6))
    assert drifting.drift_detected
    assert set(drifting.novel()) <= set(NEW_WORDS) and len(drifting.novel()) >= 5


def test_input_drift_length_shift_fires_through_psi() -> None:
    rng = random.Random(7)
    monitor = InputDrift(reference_size=300, window_size=200, threshold=0.5, length_threshold=0.25)
    for _ in range(300):
        monitor.update(sentence(rng, WORDS, rng.randint(8, 18)))
    for _ in range(200):
        monitor.update(sentence(rng, WORDS, rng.randint(60, 120)))
    assert monitor.drift_detected
    assert monitor.details()["length_psi"] > 0.25
    assert monitor.statistic < 0.5  # OOV did not move: the length test fired


def validation_of(accuracy: float, n: int = 300, seed: int = 5) -> tuple[list[str], list[str]]:
    """(true, predicted) labels of a validation split the model got about ``accuracy`` right."""
    rng = random.Random(seed)
    true = [LABELS[i % 3] for i in range(n)]
    return true, [t if rng.random() < accuracy else rng.choice([x for x in LABELS if x != t]) for t in true]


def test_performance_drift() -> None:
    rng = random.Random(3)
    reference = validation_of(0.8)
    good = PerformanceDrift(reference, threshold=0.1, min_samples=50)
    bad = PerformanceDrift(reference, threshold=0.1, min_samples=50)
    for _ in range(200):
        truth = rng.choice(LABELS)
        good.update((truth, truth if rng.random() < 0.85 else rng.choice(LABELS)))
        bad.update((truth, truth if rng.random() < 0.4 else rng.choice(LABELS)))
    assert not good.drift_detected
    assert bad.drift_detected and bad.statistic > 0.1
    unknown = PerformanceDrift(None)
    for _ in range(100):
        unknown.update(("positive", "negative"))
    assert unknown.statistic is None and not unknown.drift_detected
    assert unknown.details()["accuracy"] == 0.0
    assert unknown.details()["reason"] == "the model has no validation figures to compare with"
    assert "reason" not in good.details()
    few = PerformanceDrift(reference, min_samples=30)
    few.update(("positive", "positive"))
    assert few.statistic is None and few.details()["reason"] == "1 fresh labels, need 30"


def test_a_check_summary_says_why_a_monitor_has_no_figure() -> None:
    from retrain.drift_check import CheckReport, MonitorResult

    short = {"reason": "12 documents scored by v1, need 800"}
    report = CheckReport("v1", [
        MonitorResult("prediction", None, 0.02, False, short), MonitorResult("input", None, 0.1, False, short),
        MonitorResult("confidence", 3.5, 3.0, True, {}),
        MonitorResult("performance", None, 0.1, False, {"reason": "4 fresh labels, need 30"}),
    ])
    assert report.summary() == (
        "model v1: prediction, input=n/a (12 documents scored by v1, need 800); confidence=3.5000 DRIFT; "
        "performance=n/a (4 fresh labels, need 30); 0 fresh labels")


def resolved(n: int, source: str, label: str = "positive") -> ResolvedLabel:
    return ResolvedLabel(key=f"k{n}", doc_id=f"d{n}", text=f"{source} {n}", label=label,
                         labeled_at=T0 + timedelta(minutes=n), annotators=1, rule="single",
                         sources=frozenset({"api", source}))


def test_the_performance_monitor_leaves_out_labels_the_review_queue_chose() -> None:
    from retrain.drift_check import performance_labels

    fresh = [resolved(n, "review" if n % 2 else "csv") for n in range(10)]
    judged, left_out = performance_labels(fresh, max_labels=3)
    assert [r.doc_id for r in judged] == ["d4", "d6", "d8"] and left_out == 5  # the newest 3 of the others
    assert performance_labels(fresh[1::2], max_labels=100) == ([], 5)


class WrongScorer:  # says "negative" to everything: a performance drop on whatever it is asked to score
    def __init__(self) -> None:
        self.texts: list[str] = []

    def predict_proba(self, texts: list[str], on_batch=None) -> list[list[float]]:
        self.texts += texts
        return [[0.9, 0.05, 0.05] for _ in texts]  # LABELS order: negative first


def test_the_performance_check_reports_the_review_labels_it_left_out() -> None:
    from retrain.drift_check import _performance

    scorer = WrongScorer()
    ctx = SimpleNamespace(settings=Settings(drift_min_labels=3, drift_max_labels=100), scorer=lambda v: scorer)
    meta = {"metrics": {"validation": metrics(*validation_of(0.8))}}
    # Hard review documents only, all predicted wrong: not enough labels left to judge, and it says why.
    hard = [resolved(n, "review") for n in range(40)]
    result = _performance(ctx, "v1", meta, hard)
    assert not result.drift_detected and scorer.texts == []
    assert result.details["reason"] == "0 fresh labels, need 3; 40 from the review page left out"
    assert (result.details["fresh_labels"], result.details["review_labels_left_out"]) == (40, 40)
    # Enough other labels: only those are scored.
    result = _performance(ctx, "v1", meta, hard + [resolved(n, "csv") for n in range(40, 44)])
    assert result.drift_detected and result.details["n"] == 4 and len(scorer.texts) == 4
    assert all(t.startswith("csv") for t in scorer.texts) and result.details["review_labels_left_out"] == 40


def test_statistics() -> None:
    same = {"a": 10, "b": 20}
    assert js_divergence(same, same) == pytest.approx(0.0, abs=1e-9)
    assert js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0, abs=1e-3)
    assert psi(same, {"a": 20, "b": 10}) > 0.1
    assert entropy({"negative": 1 / 3, "neutral": 1 / 3, "positive": 1 / 3}) == pytest.approx(1.0)
    assert entropy({"negative": 1.0, "neutral": 0.0, "positive": 0.0}) == pytest.approx(0.0)
    assert margin({"negative": 0.5, "neutral": 0.3, "positive": 0.2}) == pytest.approx(0.2)
    acc, f1 = accuracy_and_macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert acc == 0.75
    assert f1 == pytest.approx((2 / 3 + 0.8) / 2)
    assert accuracy_and_macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"], labels=["b"])[1] == pytest.approx(0.8)


def test_a_confusion_matrix_gives_back_the_labels_it_counts() -> None:
    true, pred = validation_of(0.7, n=90)
    figures = metrics(true, pred)
    again_true, again_pred = confusion_pairs(figures["confusion_matrix"])
    assert metrics(again_true, again_pred)["confusion_matrix"] == figures["confusion_matrix"]
    # Over all three labels, the monitor's function and model.evaluation agree.
    assert accuracy_and_macro_f1(again_true, again_pred, labels=LABELS)[1] == pytest.approx(figures["macro_f1"])


def test_fresh_labels_without_neutrals_are_judged_on_the_labels_they_hold() -> None:
    reference = validation_of(0.8)
    per_class = metrics(*reference)["per_class"]
    perfect = PerformanceDrift(reference, threshold=0.1, min_samples=30)
    for n in range(60):
        truth = ("negative", "positive")[n % 2]
        perfect.update((truth, truth))
    # Three-label averaging would give this perfect model 0.67 against a validation ~0.8, and fire.
    assert perfect.details()["macro_f1"] == 1.0 and perfect.details()["labels"] == ["negative", "positive"]
    assert perfect.baseline == pytest.approx((per_class["negative"]["f1"] + per_class["positive"]["f1"]) / 2)
    assert perfect.statistic < 0 and not perfect.drift_detected
    # A third of them called neutral: each label's recall falls to 2/3, F1 to 0.8, about the baseline; not a third
    # of the average lost to a label the fresh labels do not hold.
    unsure = PerformanceDrift(reference, threshold=0.1, min_samples=30)
    swapped = PerformanceDrift(reference, threshold=0.1, min_samples=30)
    for n in range(60):
        truth, other = ("negative", "positive")[n % 2], ("positive", "negative")[n % 2]
        unsure.update((truth, "neutral" if n % 3 == 0 else truth))
        swapped.update((truth, other if n % 4 < 2 else truth))  # half of them the wrong way round
    assert unsure.details()["macro_f1"] == pytest.approx(0.8) and not unsure.drift_detected
    assert swapped.drift_detected and swapped.statistic > 0.1


def test_the_performance_check_needs_the_validation_confusion_matrix() -> None:
    from retrain.drift_check import _performance, validation_pairs

    scorer = WrongScorer()
    ctx = SimpleNamespace(settings=Settings(drift_min_labels=3, drift_max_labels=100), scorer=lambda v: scorer)
    figures_only = {"metrics": {"validation": {"macro_f1": 0.8}}}  # no matrix: no fair baseline to compare with
    assert validation_pairs(figures_only) is None and validation_pairs({}) is None
    result = _performance(ctx, "v1", figures_only, [resolved(n, "csv") for n in range(5)])
    assert result.statistic is None and not result.drift_detected
    assert result.details["reason"] == "the model has no validation figures to compare with"
