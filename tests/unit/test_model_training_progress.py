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


def test_training_says_on_what_and_how_long_it_trains_before_its_first_step(caplog):
    """The line an operator (and tests/reliability/test_faults.py) reads as "the steps have begun": logged once the
    model is loaded, before the first stop check, which then ends it at a step, not before training began."""
    import logging

    import pytest

    from model.base_models import DEFAULT_BASE
    from model.training import TrainingStopped, train

    rows = [(f"Shares of company {n} {word}", label) for n, (word, label) in
            enumerate([("rose", "positive"), ("fell", "negative"), ("were flat", "neutral")] * 4)]
    logged_at_first_check: list[str] = []

    def should_stop() -> bool:
        logged_at_first_check.extend(r.getMessage() for r in caplog.records)
        return True

    with caplog.at_level(logging.INFO, logger="model.training"), \
            pytest.raises(TrainingStopped, match=r"training stopped at step 0 of 40"):
        train(rows, base_model=DEFAULT_BASE, registry=None, epochs=1, max_steps=40, batch_size=4, val_fraction=0.25,
              device="cpu", precision="fp32", threads=1, progress=False, should_stop=should_stop)
    said = [line for line in logged_at_first_check if line.startswith("training on ")]
    assert said == ["training on cpu (fp32): 9 rows, 3 for validation, 40 steps (batches of 4) in 14 epoch(s)"], \
        logged_at_first_check
