"""An operator's mistake at the command line is one line naming what and where, and a non-zero exit; no traceback.
A file with nothing to replay is no mistake: it is named at once, with exit 0."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finsent.cli import app, main


def test_an_os_error_is_one_line_naming_the_path(tmp_path: Path, monkeypatch, capsys):
    # An output folder that is not there; a FINSENT_STATE_DIR that is a file fails the same way, in many commands.
    missing = tmp_path / "no-such-folder" / "objects.ndjson"
    monkeypatch.setattr(sys, "argv", ["finsent", "dashboards", "export", "--output", str(missing)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("finsent: ") and str(missing) in err and "Traceback" not in err


def test_a_config_file_in_another_encoding_is_a_settings_error(tmp_path: Path, monkeypatch):
    config = tmp_path / "finsent.env"
    config.write_bytes("FINSENT_TOPIC_PREFIX=prod\n".encode("utf-16"))  # Notepad's "Unicode"
    monkeypatch.setenv("FINSENT_CONFIG_FILE", str(config))
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "FINSENT_CONFIG_FILE: cannot read" in result.output and str(config) in result.output


def test_saved_objects_in_another_encoding_are_named(tmp_path: Path):
    objects = tmp_path / "objects.ndjson"
    objects.write_bytes('{"type": "dashboard"}\n'.encode("utf-16"))
    result = CliRunner().invoke(app, ["dashboards", "check", "--file", str(objects)])
    assert result.exit_code == 1
    assert f"cannot read {objects}" in result.output


def test_quantization_names_the_bad_rows_it_skips(tmp_path: Path):
    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\nShares fell,sideways\n,negative\n", "utf-8")
    result = CliRunner().invoke(app, ["model", "quantization", "--data", str(rows)])
    assert result.exit_code == 1  # before any model is loaded: every row was bad
    assert f"warning: skipped {rows}:2" in result.output and f"warning: skipped {rows}:3" in result.output
    assert "no usable rows to measure on" in result.output


def test_the_dashboard_port_is_checked_before_binding():
    result = CliRunner().invoke(app, ["dashboards", "serve", "--port", "70000"])
    assert result.exit_code == 2
    assert "--port" in result.output


@pytest.mark.parametrize("name,content,problem", [
    ("headlines.csv", "headline\nAlphabet beats\n", "no 'text' column (columns: ['headline'])"),
    ("/dev/null", None, "not a file"),
])
def test_a_file_that_cannot_be_replayed_is_named_before_kafka_is_connected_to(tmp_path: Path, monkeypatch, name,
                                                                               content, problem):
    import ingest.cli

    def connect(*args, **kwargs):  # with Kafka down this takes half a minute, before the file said anything
        raise AssertionError("connected to Kafka")

    monkeypatch.setattr(ingest.cli, "_start", connect)
    path = tmp_path / name  # an absolute name (/dev/null) stays itself
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(app, ["ingest", "file", str(path)])
    assert result.exit_code == 1 and f"finsent: {path}: {problem}" in result.output


@pytest.mark.parametrize("name,content", [("news.jsonl", ""), ("news.jsonl", "\n \n"), ("news.csv", "text\n")])
def test_a_file_without_records_says_so_without_connecting_to_kafka(tmp_path: Path, monkeypatch, name, content):
    import ingest.cli

    def connect(*args, **kwargs):  # with Kafka down this took half a minute, then failed
        raise AssertionError("connected to Kafka")

    monkeypatch.setattr(ingest.cli, "_start", connect)
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # no broker there either
    path = tmp_path / name
    path.write_text(content)
    result = CliRunner().invoke(app, ["ingest", "file", str(path)])
    assert result.exit_code == 0, result.output  # nothing failed: there is nothing to do
    assert f"{path}: holds no records" in result.output and "connected to Kafka" not in result.output
