"""Fault injection against the real services, counting what was sent against what arrived.

Each run records sent / indexed / lost / doubled (and alerts raised / delivered) in
``.finsent/reliability/figures.jsonl``; the target is 0 lost and 0 doubled, every time.
"Doubled" is measured where a replay could double something: documents in the index
beyond one per id, and per-ticker daily aggregates counting a document twice.
``RELIABILITY_ES_OUTAGE_S`` sets the Elasticsearch outage (default 20 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections import Counter
from urllib.parse import urlparse

import orjson
import pytest

from finsent import clients, topology
from finsent.schemas import RawDocument, document_id, utc_now
from finsent.services.kafka_server import KafkaServer
from tests.integration.stream_harness import (
    ROOT,
    TcpProxy,
    Worker,
    es_count,
    es_docs,
    make_doc,
    produce,
    read_topic,
    wait_for,
)
from tests.reliability.figures import record

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ES_OUTAGE_S = float(os.environ.get("RELIABILITY_ES_OUTAGE_S", "20"))


def index_figures(settings, sent: list[RawDocument]) -> dict:
    """lost / doubled for the documents ``sent``, read back from the index and the daily windows."""
    docs = es_docs(settings)
    ids = [d["_id"] for d in docs]
    with clients.elasticsearch(settings) as es:
        replayed = es.count(index=settings.index("docs"), query={"range": {"_seq_no": {"gte": 0}}})["count"]
        versions = es.search(index=settings.index("docs"), size=10_000, version=True, source=False)["hits"]["hits"]
    wanted = {d.id for d in sent}
    per_ticker = Counter(t for d in sent for t in dict.fromkeys(d.tickers))
    days = {a["ticker"]: a["count"] for a in es_docs(settings, "aggregates") if a["window"] == "1d"}
    return {
        "sent": len(wanted), "indexed": len(set(ids) & wanted), "lost": len(wanted - set(ids)),
        "doubled": (len(ids) - len(set(ids))) + (replayed - len(set(ids))),
        "aggregate_doubles": sum(max(0, days.get(t, 0) - n) for t, n in per_ticker.items()),
        "aggregate_missing": sum(max(0, n - days.get(t, 0)) for t, n in per_ticker.items()),
        "reindexed_after_replay": sum(1 for h in versions if h["_version"] > 1),
    }


def settle_aggregates(settings, sent: list[RawDocument], timeout: float = 90) -> None:
    per_ticker = dict(Counter(t for d in sent for t in dict.fromkeys(d.tickers)))
    wait_for(lambda: {a["ticker"]: a["count"] for a in es_docs(settings, "aggregates") if a["window"] == "1d"}
             == per_ticker, timeout, "daily aggregates to count every document once")


def check(figures: dict) -> None:
    assert figures["lost"] == 0 and figures["doubled"] == 0, figures
    assert figures["aggregate_doubles"] == 0 and figures["aggregate_missing"] == 0, figures


def test_kill_9_mid_batch(bootstrapped, tiny_model, tmp_path):
    settings = bootstrapped
    docs = [make_doc(i, tag="k9") for i in range(240)]
    first = Worker(settings, tiny_model.registry_root, tmp_path / "s1", tmp_path / "w1.log")
    second = None
    try:
        first.start().wait_ready(timeout=180)
        produce(settings, docs)
        wait_for(lambda: es_count(settings) >= 40, 120, "the first batches indexed")
        indexed_at_kill = es_count(settings)
        first.kill()  # mid-stream: a batch scored, maybe indexed, its offsets not committed
        second = Worker(settings, tiny_model.registry_root, tmp_path / "s2", tmp_path / "w2.log").start()
        second.wait_ready(timeout=180)
        wait_for(lambda: es_count(settings) >= len(docs), 240, "every document after kill -9")
        settle_aggregates(settings, docs)
        figures = index_figures(settings, docs)
        assert second.terminate() == 0
    finally:
        for w in (first, second):
            if w is not None:
                w.ensure_stopped()
    record("fault.kill9_worker", indexed_at_kill=indexed_at_kill, **figures)
    assert indexed_at_kill < len(docs), "the kill came too late to be mid-stream"
    check(figures)


def test_elasticsearch_unavailable(bootstrapped, tiny_model, tmp_path):
    settings = bootstrapped
    es = urlparse(settings.elasticsearch_url)
    proxy = TcpProxy(es.hostname, es.port)
    proxy.start()
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "w.log", es_url=proxy.url)
    before = [make_doc(i, tag="esb") for i in range(80)]
    during = [make_doc(i, tag="esd") for i in range(120)]
    try:
        worker.start().wait_ready(timeout=180)
        produce(settings, before)
        wait_for(lambda: es_count(settings) >= len(before), 120, "documents before the outage")
        proxy.stop()
        stopped = time.monotonic()
        produce(settings, during)
        wait_for(lambda: (h := worker.health()) is not None and h[0] == 503, 60, "health 503 while ES is away")
        assert es_count(settings) == len(before)
        time.sleep(max(0.0, ES_OUTAGE_S - (time.monotonic() - stopped)))
        outage = time.monotonic() - stopped
        assert worker.proc.poll() is None, worker.tail()
        proxy.start()
        wait_for(lambda: es_count(settings) >= len(before) + len(during), 240, "documents held during the outage")
        settle_aggregates(settings, before + during)
        figures = index_figures(settings, before + during)
        wait_for(lambda: (h := worker.health()) is not None and h[0] == 200, 60, "health 200 again")
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()
        proxy.stop()
    record("fault.elasticsearch_outage", outage_s=round(outage, 1), **figures)
    check(figures)


def test_mapping_conflict_dead_letters_only_the_refused_documents(bootstrapped, tiny_model, tmp_path):
    settings = bootstrapped
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "w.log")

    def doc(source_id: str, n: int) -> RawDocument:
        return RawDocument(id=document_id("test", source_id), source="test", source_id=source_id,
                           text=f"Apple shares move on news item {n}", lang="en", tickers=["AAPL"],
                           published_at=utc_now(), ingested_at=utc_now())

    good = [doc(str(1000 + n), n) for n in range(60)]
    refused = [doc(f"not-a-number-{n}", n) for n in range(5)]
    try:
        worker.start().wait_ready(timeout=180)
        # The live index drifts from the template: source_id became a number field.
        properties = dict(topology.MAPPINGS["docs"]) | {"source_id": {"type": "long"}}
        with clients.elasticsearch(settings) as es:
            es.indices.delete(index=settings.index("docs"))
            es.indices.create(index=settings.index("docs"), mappings={"dynamic": "strict", "properties": properties})
        produce(settings, good[:30] + refused + good[30:])
        wait_for(lambda: es_count(settings) >= len(good), 120, "the documents the mapping accepts")
        letters = [orjson.loads(r.value) for r in read_topic(settings, "dlq", len(refused), timeout=60)]
        figures = index_figures(settings, good)
        health = worker.health()
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()
    dead = {orjson.loads(letter["original"])["id"] for letter in letters}
    record("fault.mapping_conflict", refused_sent=len(refused), dead_letters=len(letters),
           **{k: v for k, v in figures.items() if not k.startswith("aggregate")})
    assert figures["lost"] == 0 and figures["doubled"] == 0, figures
    assert es_count(settings) == len(good)
    assert dead == {d.id for d in refused} and len(letters) == len(refused)
    assert all(letter["stage"] == "index" and "source_id" in letter["reason"] for letter in letters)
    assert health is not None and health[0] == 200


@pytest.fixture
def private_kafka(services):
    """A private broker on free ports with its own state folder (never the shared broker)."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    tag = "t" + uuid.uuid4().hex[:10]
    state = ROOT / ".finsent" / f"reliability-kafka-{tag}"
    settings = services.model_copy(update={
        "state_dir": state, "kafka_port": ports[0], "kafka_controller_port": ports[1],
        "kafka_bootstrap": f"127.0.0.1:{ports[0]}", "kafka_heap": "256m", "topic_prefix": tag, "index_prefix": tag,
    })
    server = KafkaServer(settings)
    try:
        server.wait_healthy(server.start(), timeout=180)
        admin = clients.kafka_admin(settings)
        try:
            topology.ensure_topics(admin, settings)
        finally:
            admin.close()
        with clients.elasticsearch(settings) as es:
            topology.ensure_indices(es, settings)
        yield settings, server
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
        with clients.elasticsearch(settings) as es:
            es.options(ignore_status=404).indices.delete(index=f"{settings.index_prefix}-*")
            es.options(ignore_status=404).indices.delete_index_template(name=f"{settings.index_prefix}-*")


def test_kafka_broker_restart(private_kafka, tiny_model, tmp_path):
    settings, server = private_kafka
    before = [make_doc(i, tag="kb") for i in range(100)]
    during = [make_doc(i, tag="kd") for i in range(100)]
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "w.log")
    try:
        worker.start().wait_ready(timeout=180)
        produce(settings, before)
        wait_for(lambda: es_count(settings) >= 30, 120, "documents flowing before the restart")
        server.stop()  # mid-stream: the worker loses its broker with documents still to consume
        down = time.monotonic()
        time.sleep(5)
        server.wait_healthy(server.start(), timeout=180)
        restart_s = time.monotonic() - down
        produce(settings, during)
        wait_for(lambda: es_count(settings) >= len(before) + len(during), 300,
                 f"every document after the broker restart (worker log {worker.log})")
        settle_aggregates(settings, before + during, timeout=120)
        figures = index_figures(settings, before + during)
        alive = worker.proc.poll() is None
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.ensure_stopped()
    record("fault.kafka_restart", broker_down_s=round(restart_s, 1), worker_survived=alive, **figures)
    check(figures)
