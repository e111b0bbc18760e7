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


def test_status_asks_the_users_own_clusters_not_the_local_servers(tmp_path, monkeypatch):
    import json

    from finsent.cli import app

    kafka, elastic = f"127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", kafka)
    monkeypatch.setenv("FINSENT_ELASTICSEARCH_URL", elastic)
    result = CliRunner().invoke(app, ["status", "--json"])

    assert result.exit_code == 1
    services = {row["name"]: row for row in json.loads(result.stdout) if row["kind"] == "service"}
    assert services["kafka"]["address"] == kafka and services["elasticsearch"]["address"] == elastic
    assert all(row["detail"].startswith("unreachable") and row["pid"] is None for row in services.values())
