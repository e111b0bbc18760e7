"""A command stopped while it still waits for Kafka exits at once, with a line that says so.

Kafka here is a closed local port: a client's bootstrap retries it for 30 s. Before, a SIGTERM in that time was
recorded and acted on only when the start-up gave up, with its error: `labels serve` and `dashboards serve` with a
traceback (exit 1), `alerts run` and `retrain scheduler` with "cannot start" (exit 1). `ingest serve`, `run` and
`file` connected before they installed a handler: the SIGTERM killed them (exit 143, no line). So it still killed the
one-shot commands (`ingest … --once`, `dlq replay`, `labels add`), which installed none: they now exit with the
signal's status (143) too, but with the line, as their stop later does (the work not done, nothing half-sent).
`labels index [--once]`, `retrain check` and `retrain run` too; `model promote` and `rollback` move the pointer before
they connect, so stopped then they say that it moved and how to tell the workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from retrain import label_indexer
from tests.ports import free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
FINSENT = [sys.executable, "-c", "from finsent.cli import main; main()"]  # this checkout's code, not the installed one


def _sources(folder: Path) -> str:
    (folder / "sources.yml").write_text(f"push: {{port: {free_port()}}}\n")
    return str(folder / "sources.yml")


def _documents(folder: Path) -> str:
    (folder / "docs.jsonl").write_text('{"id": "d1", "text": "$AAPL beats estimates"}\n')
    return str(folder / "docs.jsonl")


def _feeds(folder: Path) -> str:
    (folder / "feeds.yml").write_text('sources:\n  - {type: rss, urls: ["http://127.0.0.1:9/feed.xml"]}\n')
    return str(folder / "feeds.yml")


def _labels(folder: Path) -> str:
    (folder / "labels.csv").write_text("text,label\nProfit soared,positive\n")
    return str(folder / "labels.csv")


@pytest.mark.parametrize("command", [
    lambda _: ["labels", "serve", "--no-indexer"],
    lambda _: ["dashboards", "serve"],
    lambda _: ["alerts", "run", "--rules", str(ROOT / "alerts" / "rules.example.yml"), "--metrics-port", "0"],
    lambda _: ["retrain", "scheduler", "--no-indexer"],
    lambda _: ["ingest", "serve"],
    lambda folder: ["ingest", "run", "--config", _sources(folder), "--metrics-port", "0"],
    lambda _: ["labels", "index"],
], ids=["labels serve", "dashboards serve", "alerts run", "retrain scheduler", "ingest serve", "ingest run",
        "labels index"])
def test_a_stop_while_kafka_is_still_unreachable_ends_the_command_at_once(tmp_path, command):
    output = _stopped_while_starting(tmp_path, command(tmp_path), 0)  # a long-running command's stop: its normal end
    assert "finsent: stopped while starting (still connecting to Kafka at 127.0.0.1:" in output


@pytest.mark.parametrize("command", [
    lambda folder: ["ingest", "file", _documents(folder)],
    lambda folder: ["ingest", "run", "--config", _feeds(folder), "--once"],
    lambda _: ["ingest", "rss", "http://127.0.0.1:9/feed.xml", "--once"],
    lambda _: ["dlq", "replay"],
    lambda _: ["dlq", "replay", "--dry-run"],
    lambda folder: ["labels", "add", "--csv", _labels(folder)],
    lambda _: ["labels", "index", "--once"],
    lambda _: ["retrain", "check"],
    lambda _: ["retrain", "run"],
], ids=["ingest file", "ingest run --once", "ingest rss --once", "dlq replay", "dlq replay --dry-run", "labels add",
        "labels index --once", "retrain check", "retrain run"])
def test_a_one_shot_command_stopped_while_kafka_is_unreachable_says_so_with_the_signals_status(tmp_path, command):
    output = _stopped_while_starting(tmp_path, command(tmp_path), 128 + signal.SIGTERM)
    assert "finsent: stopped while starting (still connecting to Kafka at 127.0.0.1:" in output
    assert "nothing was" in output


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_move_stopped_while_kafka_is_unreachable_says_the_champion_moved_and_how_to_tell_the_workers(
        tmp_path, command):
    # The pointer moves before Kafka is connected to: stopped then, the command was killed with nothing said.
    from model.registry import Registry

    registry = Registry(tmp_path / "models")
    older, newer = (registry.register(_model_folder(tmp_path / name), {}) for name in ("older", "newer"))
    registry.promote(older)
    registry.promote(newer)
    output = _stopped_while_starting(tmp_path, ["model", "promote", older] if command == "promote"
                                     else ["model", "rollback"], 128 + signal.SIGTERM)
    assert registry.champion() == older
    assert f"champion is now {older}" in output
    assert (f"finsent: stopped by SIGTERM: the champion is now {older} (was {newer}), but running workers were not "
            f"told") in output and f"run `finsent model promote {older}` to tell them" in output


def _model_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def _stopped_while_starting(tmp_path: Path, command: list[str], status: int) -> str:
    env = os.environ | {
        "PYTHONPATH": str(ROOT), "FINSENT_STATE_DIR": str(tmp_path),
        "FINSENT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "FINSENT_ELASTICSEARCH_URL": f"http://127.0.0.1:{free_port()}",
        "FINSENT_LABEL_TOKEN": "t" * 32, "FINSENT_ALERTS_WEBHOOK_SECRET": "s" * 32,
        "FINSENT_LABELS_PORT": str(free_port()), "FINSENT_DASHBOARD_PORT": str(free_port()),
        "FINSENT_RETRAIN_METRICS_PORT": "0", "FINSENT_PUSH_PORT": str(free_port()),
        "FINSENT_INGEST_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(FINSENT + command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # kafka-python logs each refused bootstrap connection: the command is inside its start-up's Kafka wait.
        wait_for(lambda: any("bootstrap" in line.lower() for line in lines) or proc.poll() is not None, 120,
                 "the first Kafka bootstrap attempt")
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    output = "".join(lines)
    assert code == status, output
    assert "Traceback" not in output
    return output


def test_the_stop_does_not_wait_for_an_indexer_still_connecting(monkeypatch):
    # Before, the block's exit joined the indexer thread for STOP_SECONDS (15 s) while its Kafka bootstrap went on.
    entered, released = threading.Event(), threading.Event()
    outcome: list[str] = []

    class Connecting:
        def __init__(self, settings) -> None:
            pass

        def __enter__(self):
            entered.set()
            outcome.append("released" if released.wait(20) else "waited for")
            raise ConnectionError("Kafka away")

        def __exit__(self, *exc) -> None:
            pass

    monkeypatch.setattr(label_indexer, "LabelIndexer", Connecting)
    monkeypatch.setattr(label_indexer, "STOP_SECONDS", 60.0)
    with label_indexer.indexing_in_background(settings=None):
        assert entered.wait(30)
    released.set()
    wait_for(lambda: outcome, 30, "the stand-in's start to end")
    assert outcome == ["released"]
