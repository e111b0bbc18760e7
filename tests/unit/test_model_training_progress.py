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
