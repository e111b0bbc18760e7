"""The bad-input corpus straight onto ``<prefix>.raw``, through a real worker process.

Every record the pure path calls invalid ends as exactly one dead letter at its own
partition/offset with a reason; every valid one is indexed under its id; the worker stays
up and healthy throughout and stops cleanly.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import given

from finsent import clients
from finsent.schemas import RecordError
from stream.validation import parse_raw
from tests.integration.stream_harness import Worker, es_docs, read_topic, wait_for
from tests.reliability.bad_input import case_bytes, corpus_settings, load_cases, raw_documents, raw_records
from tests.reliability.figures import record

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_TEXT_BYTES = 100_000


def generated(strategy, examples: int) -> list[bytes]:
    out: list[bytes] = []

    @corpus_settings(examples)
    @given(strategy)
    def collect(value):
        out.append(value)

    collect()
    return out


def test_bad_records_become_dead_letters_and_valid_ones_are_indexed(bootstrapped, tiny_model, tmp_path):
    settings = bootstrapped
    values = [case_bytes(c) for c in load_cases("raw")]
    values += generated(raw_records(), 300)
    values += generated(raw_documents().map(orjson.dumps), 100)
    expected_valid: dict[str, bytes] = {}
    invalid: list[bytes] = []
    for value in values:
        try:
            expected_valid[parse_raw(value, MAX_TEXT_BYTES).id] = value  # a later copy of an id overwrites
        except RecordError:
            invalid.append(value)

    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "worker.log")
    try:
        worker.start().wait_ready(timeout=180)
        producer = clients.kafka_producer(settings)
        futures = [(value, producer.send(settings.topic("raw"), key=b"corpus", value=value)) for value in values]
        producer.flush(60)
        placed = {(f.get(30).partition, f.get(30).offset): value for value, f in futures}
        producer.close(10)

        def settled():
            assert worker.proc.poll() is None, worker.tail()
            indexed = {d["_id"] for d in es_docs(settings)}
            return indexed if len(indexed) >= len(expected_valid) else None

        indexed = wait_for(settled, 240, f"{len(expected_valid)} valid documents indexed")
        letters = [orjson.loads(r.value) for r in read_topic(settings, "dlq", len(invalid), timeout=120)]
        health = worker.health()
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.ensure_stopped()

    by_place = {(letter["partition"], letter["offset"]): letter for letter in letters}
    stages = Counter(letter["stage"] for letter in letters)
    wrong = [(place, by_place.get(place, {}).get("stage")) for place, value in placed.items()
             if value in invalid and (place not in by_place or not by_place[place]["reason"])]
    record("corpus.worker", cases=len(values), valid=len(values) - len(invalid), unique_valid_ids=len(expected_valid),
           invalid=len(invalid), indexed=len(indexed), dead_letters=len(letters), dlq_stages=dict(stages),
           lost=len(set(expected_valid) - indexed), unexplained=len(wrong))
    assert health is not None and health[0] == 200, health
    assert indexed == set(expected_valid)
    assert not wrong, wrong[:5]
    assert len(letters) == len(invalid) and set(stages) == {"validate"}
    for place, letter in by_place.items():
        assert letter["topic"] == settings.topic("raw")
        assert letter["original"] == placed[place].decode("utf-8", errors="backslashreplace")
