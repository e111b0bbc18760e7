"""A one-shot command that produces to Kafka, stopped by SIGTERM half-way: it stops at the next letter, label, line or
source, sends and flushes what it read, says what was done and what was left, and exits 143; run again, it goes on
and sends nothing twice. Before, SIGTERM killed them wherever they were (status 143, no line, a replay half-done
with nothing said). Kafka and Elasticsearch are stand-ins here; the signal is real, sent to this process (the test
runs the command in its main thread, where the command's handler is).

The stop while Kafka is still being connected to is tests/unit/test_stop_while_starting.py; the replay against the
real topic, tests/integration/test_dlq_replay.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from finsent import clients
from finsent.cli import app
from finsent.schemas import DeadLetter
from tests.unit.test_ingest_pipeline import started_pipeline

STOPPED = 128 + signal.SIGTERM


@pytest.fixture(autouse=True)
def handlers_put_back():
    """The command's handlers (and asyncio's SIG_DFL after its loop) leave with the test."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def export_stopped_by_sigterm(exported: list[str]):
    """A stand-in for ``model.onnx_runtime.export_apart`` that a SIGTERM reaches while it runs, true to its contract:
    killed, files and all, once asked to stop. Each export's folder name goes to ``exported``."""
    from model.onnx_runtime import ExportStopped

    def export_apart(folder, *, should_stop, **kwargs):
        exported.append(folder.name)
        _sigterm()
        assert should_stop(), "the export was not asked to stop"
        raise ExportStopped(f"the export of {folder} asked to stop: killed after 0.1 s")

    return export_apart


@pytest.fixture
def env(tmp_path):
    return {"FINSENT_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}


class Producer:
    """kafka-python's producer, as far as the commands use it: each send is acknowledged."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.stop_at = stop_at  # SIGTERM at this send (its number, from 1), as Kafka takes it
        self.flushed = self.closed = False

    def send(self, topic, value=None, key=None, headers=None):
        self.sent.append((topic, key, value))
        if len(self.sent) == self.stop_at:
            _sigterm()
        return SimpleNamespace(get=lambda timeout=None: None)

    def flush(self, timeout=None) -> None:
        self.flushed = True

    def close(self, timeout=None) -> None:
        self.closed = True


# --- finsent dlq replay ---------------------------------------------------------------------------------------------

LETTERS = 1200  # more than two of the replay's chunks (500)


class DlqConsumer:
    """One partition of the DLQ topic holding LETTERS letters, polled 100 at a time; SIGTERM as the poll that
    returns offset ``stop_at`` runs."""

    def __init__(self, topic: str, stop_at: int | None) -> None:
        now = datetime.now(UTC)
        self.records = [SimpleNamespace(partition=0, offset=n, key=b"AAPL", value=DeadLetter(
            stage="index", reason="refused", original=f"doc-{n}", topic="finsent.raw", partition=0, offset=n,
            failed_at=now).to_json()) for n in range(LETTERS)]
        self.topic, self.stop_at, self.at = topic, stop_at, 0

    def partitions_for_topic(self, topic):
        return {0} if topic == self.topic else None

    def assign(self, tps) -> None:
        self.tp = tps[0]

    def offsets_for_times(self, times):
        return {tp: SimpleNamespace(offset=0) for tp in times}

    def end_offsets(self, tps):
        return {tp: LETTERS for tp in tps}

    def seek(self, tp, offset) -> None:
        self.at = offset

    def poll(self, timeout_ms=0):
        records = self.records[self.at:self.at + 100]
        if self.stop_at is not None and self.at <= self.stop_at < self.at + 100:
            _sigterm()
        self.at += len(records)
        return {self.tp: records} if records else {}

    def position(self, tp) -> int:
        return self.at

    def close(self) -> None:
        pass


class Index:
    """Elasticsearch's mget: the documents the worker indexed."""

    def __init__(self, indexed: set[str]) -> None:
        self.indexed = indexed

    def mget(self, index, ids, source=False):
        return {"docs": [{"_id": i, "found": i in self.indexed} for i in ids]}

    def close(self) -> None:
        pass


def _replay(monkeypatch, env, *, stop_at: int | None, indexed: set[str]):
    import finsent.dead_letters_cli as cli

    producer = Producer()
    monkeypatch.setattr(cli, "_checks", lambda settings: {"finsent.raw": lambda value: value.decode()})
    monkeypatch.setattr(clients, "kafka_producer", lambda settings, **_: producer)
    monkeypatch.setattr(clients, "kafka_consumer", lambda settings, **_: DlqConsumer(settings.topic("dlq"), stop_at))
    monkeypatch.setattr(clients, "elasticsearch", lambda settings: Index(indexed))
    result = CliRunner().invoke(app, ["dlq", "replay"], env=env)
    return result, producer


def test_a_replay_stopped_half_way_sends_what_it_read_says_so_and_the_next_run_goes_on(monkeypatch, env):
    first, producer = _replay(monkeypatch, env, stop_at=600, indexed=set())
    assert first.exit_code == STOPPED, first.output
    sent = [value.decode() for _, _, value in producer.sent]
    assert sent == [f"doc-{n}" for n in range(600)]  # the first chunk, and the 100 letters read of the second
    assert producer.flushed and producer.closed
    assert "sent 600" in first.stdout
    assert ("finsent: stopped by SIGTERM: 600 of the 1200 records of finsent.dlq since 24h read, 600 sent and "
            "acknowledged; run it again to go on" in first.stderr)

    # The worker indexed what was sent; the second run skips those and sends the rest, each once.
    second, again = _replay(monkeypatch, env, stop_at=None, indexed=set(sent))
    assert second.exit_code == 0, second.output
    resent = [value.decode() for _, _, value in again.sent]
    assert sorted(sent + resent) == sorted(f"doc-{n}" for n in range(LETTERS)) and not set(sent) & set(resent)
    assert "sent 600" in second.stdout and "stopped" not in second.output


def test_a_dry_run_stopped_half_way_says_what_it_read(monkeypatch, env):
    import finsent.dead_letters_cli as cli

    monkeypatch.setattr(cli, "_checks", lambda settings: {"finsent.raw": lambda value: value.decode()})
    monkeypatch.setattr(clients, "kafka_producer", lambda settings, **_: pytest.fail("a dry run made a producer"))
    monkeypatch.setattr(clients, "kafka_consumer", lambda settings, **_: DlqConsumer(settings.topic("dlq"), 100))
    monkeypatch.setattr(clients, "elasticsearch", lambda settings: Index(set()))
    result = CliRunner().invoke(app, ["dlq", "replay", "--dry-run"], env=env)
    assert result.exit_code == STOPPED, result.output
    assert "would send 100" in result.stdout
    assert "finsent: stopped by SIGTERM: 100 of the 1200 records of finsent.dlq since 24h read, 100 would be sent" \
        in result.stderr


# --- finsent labels add ---------------------------------------------------------------------------------------------

def test_labels_add_stopped_half_way_publishes_the_labels_before_the_stop_and_says_how_many_were_left(
        monkeypatch, env, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\n" + "".join(f"Profit rose {n} percent,positive\n" for n in range(5)))
    producer = Producer(stop_at=3)
    monkeypatch.setattr(clients, "kafka_producer", lambda settings, **_: producer)
    result = CliRunner().invoke(app, ["labels", "add", "--csv", str(labels)], env=env)
    assert result.exit_code == STOPPED, result.output
    assert len(producer.sent) == 3 and producer.flushed and producer.closed
    assert "published 3 label(s)" in result.stdout
    assert "finsent: stopped by SIGTERM: 2 of the 5 labels not published; run the command again" in result.stderr


# --- finsent ingest file, ingest … --once ---------------------------------------------------------------------------

def _text(n: int) -> str:
    """Texts no two of which the dedup index takes for near-duplicates."""
    return " ".join(hashlib.sha256(f"{n}-{k}".encode()).hexdigest()[:10] for k in range(8)) + " $AAPL"


def _file(tmp_path, env, monkeypatch, *, stop: bool):
    """``ingest file`` of 40 lines into a pipeline whose Kafka is a stand-in (the dedup index in ``state``); with
    ``stop``, SIGTERM as Kafka takes the first batch (5 lines). What Kafka took, by source id, and the result."""
    import ingest.cli
    import ingest.replay

    lines = tmp_path / "docs.jsonl"
    lines.write_text("".join(f'{{"source": "wire", "source_id": "{n}", "text": "{_text(n)}"}}\n' for n in range(40)))
    monkeypatch.setattr(ingest.replay, "BATCH", 5)
    taken: list[str] = []
    with started_pipeline(tmp_path / "dedup") as pipe:
        send = pipe.sink.send

        def send_then_stop(docs):
            delivery = send(docs)
            taken.extend(doc.source_id for doc in docs)
            if stop and len(taken) == len(docs):
                _sigterm()
            return delivery

        pipe.sink.send = send_then_stop
        monkeypatch.setattr(ingest.cli, "_start", lambda *_, **__: pipe)
        result = CliRunner().invoke(app, ["ingest", "file", str(lines)], env=env)
    return taken, result


def test_ingest_file_stopped_half_way_says_where_and_the_next_run_goes_on(tmp_path, env, monkeypatch):
    first, stopped = _file(tmp_path, env, monkeypatch, stop=True)
    assert stopped.exit_code == STOPPED, stopped.output
    assert 5 <= len(first) < 40  # the batch under way when the stop came, at most one more: not the whole file
    assert f"produced {len(first)}, duplicates 0" in stopped.stdout
    assert f"the replay ended before docs.jsonl:{len(first) + 1}; run it again to go on" in stopped.stderr

    second, rest = _file(tmp_path, env, monkeypatch, stop=False)
    assert rest.exit_code == 0, rest.output
    assert f"produced {40 - len(first)}, duplicates {len(first)}" in rest.stdout
    assert sorted(first + second, key=int) == [str(n) for n in range(40)]  # each line produced once


def test_a_polling_command_once_stopped_half_way_leaves_the_sources_after_the_stop_and_names_them(
        tmp_path, env, monkeypatch):
    import ingest.cli
    from ingest.items import FetchResult, SourceItem
    from ingest.sources.rss import RssSource

    fetched: list[str] = []

    async def fetch(self):
        fetched.append(self.url)
        if len(fetched) == 2:
            _sigterm()  # while the second feed is being fetched
        return FetchResult(items=[SourceItem(source=self.name, text=_text(len(fetched)), source_id=self.url)])

    monkeypatch.setattr(RssSource, "fetch", fetch)
    feeds = [f"https://news{n}.example/feed.xml" for n in range(4)]
    with started_pipeline(tmp_path / "dedup") as pipe:
        monkeypatch.setattr(ingest.cli, "_start", lambda *_, **__: pipe)
        result = CliRunner().invoke(app, ["ingest", "rss", *feeds, "--once"], env=env)
        produced = [doc.source_id for doc in pipe.sink.sent]
    assert result.exit_code == STOPPED, result.output
    assert fetched == feeds[:2] and produced == feeds[:2]  # the poll under way finished; no other began
    assert "ingest: fetched 2, produced 2" in result.stdout
    assert ("finsent: stopped by SIGTERM: 2 source(s) not polled (rss:news2.example, rss:news3.example); run the "
            "command again to poll them") in result.stderr


def test_a_replay_run_in_the_process_puts_the_previous_handler_back(monkeypatch, env):
    # Run by a test (CliRunner), the command's handler stayed: the next SIGTERM to the test process was swallowed.
    def previous(signum, frame):
        pass

    signal.signal(signal.SIGTERM, previous)
    result, _ = _replay(monkeypatch, env, stop_at=None, indexed=set())
    assert result.exit_code == 0, result.output
    assert signal.getsignal(signal.SIGTERM) is previous
