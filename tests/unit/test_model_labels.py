import pytest

from model.labels import LabelError, model_label_order, normalise_label


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Positive", "positive"), (" NEGATIVE ", "negative"), ("bullish", "positive"), ("Bearish", "negative"),
     ("neutral", "neutral"), ("NEU", "neutral")],
)
def test_normalise_label_accepts_common_spellings(raw, expected):
    assert normalise_label(raw) == expected


@pytest.mark.parametrize("raw", ["great", "", "LABEL_1"])
def test_normalise_label_refuses_unknown(raw):
    with pytest.raises(LabelError, match="unknown label"):
        normalise_label(raw)


# The finance-tweets set numbers its classes 0=bearish, 1=bullish, 2=neutral; reading "0" as neutral
# loaded its bearish rows as neutral. No numbering is guessed.
@pytest.mark.parametrize("raw", ["0", "1", "2", "-1", "+1", " 0 ", 0, 1, -1, 1.0])
def test_normalise_label_refuses_numeric_class_ids(raw):
    with pytest.raises(LabelError, match=r"numeric label .* is ambiguous.*negative, neutral, positive"):
        normalise_label(raw)


def test_model_label_order_reads_named_heads_in_any_order():
    # ProsusAI/finbert's head: 0 positive, 1 negative, 2 neutral.
    assert model_label_order({0: "positive", 1: "negative", 2: "neutral"}) == ["positive", "negative", "neutral"]
    assert model_label_order({"0": "Bearish", "1": "Bullish", "2": "Neutral"}) == ["negative", "positive", "neutral"]


def test_model_label_order_generic_names_follow_sentiment_convention():
    assert model_label_order({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}) == ["negative", "neutral", "positive"]


@pytest.mark.parametrize("id2label", [{0: "LABEL_0", 1: "LABEL_1"}, {0: "positive", 1: "positive", 2: "neutral"}])
def test_model_label_order_refuses_heads_that_do_not_fit(id2label):
    with pytest.raises(LabelError):
        model_label_order(id2label)
