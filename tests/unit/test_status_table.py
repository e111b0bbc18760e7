"""`finsent status` fits the terminal: at 80 columns, no line is longer and no address is cut."""

import pytest
from typer.testing import CliRunner

from tests.ports import free_port


@pytest.mark.parametrize("columns", [80, 132])
def test_status_table_fits_the_terminal(columns, tmp_path, monkeypatch):
    from finsent.cli import app

    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path))
    for port in ("FINSENT_KAFKA_PORT", "FINSENT_ELASTICSEARCH_PORT"):  # nothing listens: every row says why
        monkeypatch.setenv(port, str(free_port()))
    result = CliRunner().invoke(app, ["status"], env={"COLUMNS": str(columns)})

    assert result.exit_code == 1  # the services are down
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert "http://127.0.0.1:6066/metrics" in result.stdout and "not running" in result.stdout
    assert ("service" in result.stdout) is (columns >= 100)  # the kind column only where it fits
