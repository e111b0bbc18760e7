"""``finsent dlq`` against the real worker: documents Elasticsearch refused because the live index's
mapping had drifted go to the DLQ, and a replay after the mapping is fixed indexes each of them once; a replay stopped
half-way by SIGTERM sends what it read, and run again sends the rest, each once."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import timedelta

import orjson
import pytest
from typer.testing import CliRunner

from finsent import clients, topology
from finsent.schemas import LabelRecord, utc_now
from stream.validation import Origin, dead_letter
from tests.integration.stream_harness import Worker, es_count, es_docs, make_doc, produce, read_topic
from tests.topic_reading import topic_held
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _dlq(*args: str) -> tuple[str, str]:
    from finsent.cli import app

    result = CliRunner().invoke(app, ["dlq", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout, result.stderr


def _verdicts(stdout: str) -> Counter[str]:
    return Counter(orjson.loads(line)["verdict"].split(":")[0] for line in stdout.splitlines())


def test_documents_refused_by_a_drifted_mapping_are_replayed_once(bootstrapped, tiny_model, tmp_path, monkeypatch):
    settings = bootstrapped
    monkeypatch.setenv("FINSENT_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("FINSENT_INDEX_PREFIX", settings.index_prefix)
    monkeypatch.setenv("COLUMNS", "240")  # rich folds long reasons to the terminal's width
    docs_index = settings.index("docs")
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "worker.log")
    es = clients.elasticsearch(settings)
    try:
        worker.start().wait_ready()
        # The live index drifts from the template: source_id became a number, and ours are words.
        es.indices.delete(index=docs_index)
        es.indices.create(index=docs_index, mappings={
            "dynamic": "strict", "properties": dict(topology.MAPPINGS["docs"]) | {"source_id": {"type": "long"}}})
        docs = [make_doc(i, tag="drifted") for i in range(10)]
        # Ingested three hours ago: the replay's latency must count from the replay, not from then.
        produce(settings, docs, raw=[(b"AAPL", b"{not json")], ingested_at=utc_now() - timedelta(hours=3))
        # A letter from an internal stage, as the worker writes one for a bad window event.
        producer = clients.kafka_producer(settings)
        internal = dead_letter("windows", "bad window event: test", b'{"ticker": 1}',
                               Origin(settings.topic("stream-window-events"), 0, 7), utc_now())
        producer.send(settings.topic("dlq"), value=internal.to_json())
        # A label Elasticsearch refused, as the label indexer writes it.
        label = LabelRecord(doc_id="drifted1", text="Profit soared", label="positive", labeled_at=utc_now())
        refused = dead_letter("labels", "elasticsearch refused the label: test", label.to_json(),
                              Origin(settings.topic("labels"), 0, 3), utc_now())
        producer.send(settings.topic("dlq"), value=refused.to_json())
        producer.send(settings.topic("dlq"), value=b"not a dead letter")
        producer.flush()
        producer.close()
        read_topic(settings, "dlq", 14, timeout=120)

        shown, unreadable = _dlq("show", "--json")
        letters = [orjson.loads(line) for line in shown.splitlines()]
        assert Counter(letter["stage"] for letter in letters) == {"index": 10, "validate": 1, "windows": 1, "labels": 1}
        assert all("[source_id]" in letter["reason"] for letter in letters if letter["stage"] == "index")
        assert unreadable.count("not a dead letter") == 1
        assert _dlq("show", "--json", "--until", "1h")[0] == ""  # every letter is newer than that
        table, _ = _dlq("show", "--stage", "index", "--limit", "3")
        assert "10 letters" in table and "field [source_id] of type [long]" in table  # brackets are not markup

        # The mapping is fixed (the index made again from the template); a dry run sends nothing.
        es.indices.delete(index=docs_index)
        topology.ensure_indices(es, settings)
        dry, _ = _dlq("replay", "--dry-run", "--json")
        assert _verdicts(dry) == {"replay": 11, "still invalid": 1, "not replayable": 1}
        assert len(topic_held(settings, "raw")) == 11  # the 10 documents and the bad record

        sent, _ = _dlq("replay")
        assert "sent 11" in sent
        wait_for(lambda: es_count(settings) >= len(docs), 120, "the replayed documents indexed")
        assert {d["_id"] for d in es_docs(settings)} == {d.id for d in docs}
        # Dead-lettered at the index stage, the ten were never observed before. Counted from their ingest
        # time each would read three hours; from the replay, each is under an hour however slow the machine.
        latency = "finsent_stream_end_to_end_latency_seconds"
        wait_for(lambda: worker.samples_or_none(f"{latency}_count") == {(): 10.0}, 30, "ten latencies observed")
        assert worker.samples(f"{latency}_bucket")[(("le", "3600.0"),)] == 10.0

        again, _ = _dlq("replay", "--json")
        # Labels have no document to look up; their id (document + annotator) makes a second write a no-op.
        assert _verdicts(again) == {"already indexed": 10, "replay": 1, "still invalid": 1, "not replayable": 1}
        assert len(topic_held(settings, "raw")) == 21
        labels = [orjson.loads(m.value) for m in topic_held(settings, "labels")]
        assert [(lab["doc_id"], lab["label"]) for lab in labels] == [("drifted1", "positive")] * 2

        # A write block refuses every document alike: the worker holds the stream instead of dead-lettering.
        es.indices.put_settings(index=docs_index, settings={"index.blocks.write": True})
        held = [make_doc(i, tag="held") for i in range(5)]
        produce(settings, held)
        wait_for(lambda: (h := worker.health()) is not None and h[0] == 503, 60, "health 503 while writes are blocked")
        es.indices.put_settings(index=docs_index, settings={"index.blocks.write": None})
        wait_for(lambda: es_count(settings) >= len(docs) + len(held), 120, "the held documents indexed")
        assert len(topic_held(settings, "dlq")) == 14  # no new letter
        assert worker.terminate() == 0
        assert "\x1b" not in worker.log.read_text(errors="replace")  # no terminal spinner in a log file
    finally:
        es.options(ignore_status=404).indices.put_settings(index=docs_index, settings={"index.blocks.write": None})
        es.close()
        worker.ensure_stopped()


def test_a_replay_stopped_half_way_sends_what_it_read_and_run_again_sends_the_rest_once(
        bootstrapped, tiny_model, tmp_path, monkeypatch):
    import finsent.dead_letters_cli as dlq_cli
    from finsent.cli import app

    settings = bootstrapped
    monkeypatch.setenv("FINSENT_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("FINSENT_INDEX_PREFIX", settings.index_prefix)
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "worker.log")
    try:
        worker.start().wait_ready()
        monkeypatch.setattr(dlq_cli, "_CHUNK", 50)  # the replay's chunks, smaller: fewer documents to score
        docs = [make_doc(i, tag="stopped") for i in range(120)]  # more than two chunks
        producer = clients.kafka_producer(settings)
        for i, doc in enumerate(docs):  # as the worker writes them for documents the index refused
            letter = dead_letter("index", "elasticsearch refused: test", doc.to_json(),
                                 Origin(settings.topic("raw"), 0, i), utc_now())
            producer.send(settings.topic("dlq"), key=doc.tickers[0].encode(), value=letter.to_json())
        producer.flush()
        producer.close()
        read_topic(settings, "dlq", len(docs), timeout=120)

        indexed = dlq_cli._indexed

        def stop_in_the_first_chunk(*args):
            os.kill(os.getpid(), signal.SIGTERM)  # recorded by the replay's handler: this chunk still goes
            return indexed(*args)

        monkeypatch.setattr(dlq_cli, "_indexed", stop_in_the_first_chunk)
        stopped = CliRunner().invoke(app, ["dlq", "replay"])
        monkeypatch.setattr(dlq_cli, "_indexed", indexed)
        assert stopped.exit_code == 128 + signal.SIGTERM, stopped.output
        assert "sent 50" in stopped.stdout
        assert (f"finsent: stopped by SIGTERM: 50 of the 120 records of {settings.topic('dlq')} since 24h read, "
                "50 sent and acknowledged; run it again to go on") in stopped.stderr
        assert len(topic_held(settings, "raw")) == 50
        wait_for(lambda: es_count(settings) >= 50, 120, "the first run's documents indexed")

        again, _ = _dlq("replay")
        assert "sent 70" in again
        wait_for(lambda: es_count(settings) >= len(docs), 120, "every replayed document indexed")
        replayed = [orjson.loads(record.value)["id"] for record in topic_held(settings, "raw")]
        assert sorted(replayed) == sorted(doc.id for doc in docs)  # each sent once, over the two runs
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()
