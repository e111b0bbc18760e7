"""Training shows a bar with an ETA on a terminal. Elsewhere rich would draw nothing until the end, so
a first model trained under `make up > up.log` looked hung for minutes; there it logs its steps
(tests/integration/test_first_model.py)."""

from __future__ import annotations

from model.training import _progress


def test_the_bar_is_drawn_only_on_a_terminal_that_asked_for_it(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # no terminal, even under pytest -s: log lines instead
    assert _progress(True).disable
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich then treats stderr as a terminal
    assert not _progress(True).disable
    assert _progress(False).disable


def test_training_names_every_bad_row_it_skips_not_only_the_first(tmp_path, caplog):
    import logging

    import pytest

    from model.base_models import DEFAULT_BASE
    from model.training import train

    renamed, numbered = tmp_path / "renamed.csv", tmp_path / "numbered.csv"
    renamed.write_text("headline,label\nProfits rose,positive\n", encoding="utf-8")
    numbered.write_text("text,label\nProfits rose,1\nShares fell,-1\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="model.training"), pytest.raises(ValueError, match="at least 2"):
        train([renamed, numbered], base_model=DEFAULT_BASE, registry=None)  # stops before a model loads
    assert f"skipped {renamed}:1: " in caplog.text
    assert f"skipped {numbered}:2: numeric label '1'" in caplog.text and f"skipped {numbered}:3: " in caplog.text
    assert "skipped 3 bad row(s) in all" in caplog.text
