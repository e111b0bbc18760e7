from types import SimpleNamespace

import pytest

from model.chunking import aggregate, length_sorted_batches, split_tokens
from model.scorer import length_limit


def test_split_tokens_windows_without_overlap_and_caps_chunks():
    ids = list(range(10))
    assert split_tokens(ids, 4, 10) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_tokens(ids, 4, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split_tokens([], 4, 2) == [[]]
    with pytest.raises(ValueError):
        split_tokens(ids, 0, 2)


def test_aggregate_is_token_weighted_mean():
    probs = aggregate([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [3, 1])
    assert probs == pytest.approx([0.75, 0.0, 0.25])
    assert sum(probs) == pytest.approx(1.0)


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = [5, 1, 9, 3, 7]
    batches = length_sorted_batches(lengths, 2)
    assert batches == [[2, 4], [0, 3], [1]]
    assert sorted(i for b in batches for i in b) == list(range(5))


@pytest.mark.parametrize(
    ("config", "tokenizer_max", "limit"),
    [
        (SimpleNamespace(model_type="bert", max_position_embeddings=512, pad_token_id=0), 512, 512),
        (SimpleNamespace(model_type="bert", max_position_embeddings=512, pad_token_id=0), int(1e30), 512),  # no limit
        (SimpleNamespace(model_type="bert", max_position_embeddings=512), 256, 256),
        (SimpleNamespace(model_type="roberta", max_position_embeddings=514, pad_token_id=1), None, 512),  # pad offset
        (SimpleNamespace(model_type="bert", max_position_embeddings=512), 4096, 512),  # the smaller one holds
        (SimpleNamespace(), None, None),
    ],
)
def test_length_limit_is_what_the_model_reads_in_one_sequence(config, tokenizer_max, limit):
    assert length_limit(config, tokenizer_max) == limit
