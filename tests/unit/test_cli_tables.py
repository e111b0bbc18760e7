"""Tables fit the terminal: whole cells are never cut, long ones fold, narrow terminals drop columns."""

import pytest

from finsent.cli_tables import Column, print_table

COLUMNS = [Column("version"), Column("temperature", from_width=100), Column("reason", whole=False)]
ROW = ["v20261130-082435-b4c8", "1.22", "index [finsent-docs] blocked by: [FORBIDDEN/8/index write (api)]"]


@pytest.mark.parametrize("width", [60, 120])
def test_whole_cells_stay_whole_and_brackets_are_text(width, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(width))
    print_table(COLUMNS, [ROW])
    out = capsys.readouterr().out

    assert max(len(line) for line in out.splitlines()) <= width
    assert ROW[0] in out
    assert "[finsent-docs]" in out and "[FORBIDDEN/8/index" in out  # not swallowed as rich markup
    assert ("temperature" in out) is (width >= 100)
