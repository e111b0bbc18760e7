import pytest

from model.evaluation import by_source, expected_calibration_error, metrics, summary_lines


def test_metrics_match_a_hand_computed_example():
    y_true = ["positive", "positive", "negative", "neutral", "neutral", "neutral"]
    y_pred = ["positive", "neutral", "negative", "neutral", "neutral", "positive"]
    m = metrics(y_true, y_pred)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # Wilson, z=1.96: centre (p + z²/2n)/(1 + z²/n) = 0.6016, half-width z·√(p(1−p)/n + z²/4n²)/(1 + z²/n) = 0.3016
    assert m["accuracy_ci95"] == pytest.approx([0.3000, 0.9032], abs=1e-4)
    # negative: P=1 R=1 F1=1; neutral: P=2/3 R=2/3 F1=2/3; positive: P=1/2 R=1/2 F1=1/2
    assert m["per_class"]["negative"]["f1"] == pytest.approx(1.0)
    assert m["per_class"]["neutral"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["neutral"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["positive"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["neutral"]["support"] == 3
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert m["confusion_matrix"]["labels"] == ["negative", "neutral", "positive"]
    assert m["confusion_matrix"]["rows_true_cols_pred"] == [[1, 0, 0], [0, 2, 1], [0, 1, 1]]
    assert "ece" not in m


def test_ece_by_hand():
    # Two in bin (0.9,1.0]: conf 0.95 both, one right → |0.5-0.95| = 0.45, weight 2/4.
    # Two in bin (0.5,0.6]: conf 0.55 both, both right → |1-0.55| = 0.45, weight 2/4.
    ece = expected_calibration_error([0.95, 0.95, 0.55, 0.55], [True, False, True, True])
    assert ece == pytest.approx(0.45)
    assert expected_calibration_error([], []) == 0.0


def test_metrics_with_probabilities_reports_ece_and_refuses_mismatched_lengths():
    probs = [[0.1, 0.1, 0.8], [0.7, 0.2, 0.1]]
    m = metrics(["positive", "neutral"], ["positive", "negative"], probs)
    assert m["ece"] == pytest.approx(0.5 * abs(1 - 0.8) + 0.5 * abs(0 - 0.7))
    with pytest.raises(ValueError):
        metrics(["positive"], [], None)


def test_by_source_judges_each_source_on_its_own():
    y_true = ["positive", "negative", "neutral", "neutral", "positive"]
    y_pred = ["positive", "negative", "positive", "neutral", "neutral"]
    figures = by_source(y_true, y_pred, ["fpb", "fpb", "tweets", "tweets", "tweets"])
    assert list(figures) == ["fpb", "tweets"]
    assert figures["fpb"]["n"] == 2 and figures["fpb"]["accuracy"] == 1.0 and figures["fpb"]["macro_f1"] == 1.0
    assert figures["tweets"]["n"] == 3 and figures["tweets"]["accuracy"] == pytest.approx(1 / 3)
    low, high = figures["tweets"]["accuracy_ci95"]
    assert low < 1 / 3 < high


def test_summary_lines_say_the_overall_figures_then_each_source_in_a_line():
    validation = {"n": 1338, "accuracy": 0.85575, "macro_f1": 0.81167, "ece": 0.03705, "accuracy_ci95": [0.83, 0.87],
                  "per_class": {"negative": {"precision": 0.77}}, "confusion_matrix": {"labels": ["negative"]},
                  "by_source": {"fpb": {"n": 384, "accuracy": 0.84375, "macro_f1": 0.8305}}}
    assert summary_lines(validation) == [
        "validation: n=1338 accuracy=0.8558 macro_f1=0.8117 ece=0.0370",
        "  fpb: n=384 accuracy=0.8438 macro_f1=0.8305",
    ]
    assert summary_lines({}) == ["validation: none (no validation split)"]


def test_macro_f1_averages_the_labels_the_data_holds():
    # A label with no row has F1 0 however the model does: a perfect model on positives and negatives scored 0.67.
    m = metrics(["positive", "negative", "positive"], ["positive", "negative", "positive"])
    assert m["macro_f1"] == 1.0 and m["macro_f1_labels"] == ["negative", "positive"]
    assert m["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # Calling a row neutral still costs: positive's recall falls to 1/2, its F1 to 2/3.
    assert metrics(["positive", "positive"], ["positive", "neutral"])["macro_f1"] == pytest.approx(2 / 3)
    assert "macro_f1_labels" not in metrics(["positive", "negative", "neutral"], ["neutral"] * 3)
