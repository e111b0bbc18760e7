"""How long the worker waits for a scorer process's answer before it takes the process for hung: the setting, plus
an allowance per window of text that never counts fewer windows than the scorer reads."""

from __future__ import annotations

import pytest

from model.scorer_process import SECONDS_PER_WINDOW, answer_within


def test_each_text_counts_its_windows_at_one_character_a_token_up_to_the_scorer_s_cap():
    headline = "UnitedHealth shares climb 3% after quarterly revenue tops analyst estimates"
    assert answer_within([headline], 60, 128) == pytest.approx(60 + SECONDS_PER_WINDOW)
    assert answer_within([""], 60, 128) == pytest.approx(60 + SECONDS_PER_WINDOW)  # still a forward pass
    assert answer_within(["x" * 126, "x" * 127], 60, 128) == pytest.approx(60 + 3 * SECONDS_PER_WINDOW)
    # The worker's largest batch: 64 texts at FINSENT_MAX_TEXT_BYTES, 32 windows each.
    assert answer_within(["x" * 100_000] * 64, 60, 128) == pytest.approx(60 + 64 * 32 * SECONDS_PER_WINDOW)


def test_texts_in_a_language_of_one_token_a_character_are_not_undercounted():
    # 600 CJK characters are about 600 word pieces: five windows of 126, which a count of words would miss.
    assert answer_within(["株" * 600], 0, 128) == pytest.approx(5 * SECONDS_PER_WINDOW)
