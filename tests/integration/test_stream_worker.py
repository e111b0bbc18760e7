"""The stream worker against the real Kafka and Elasticsearch, run as real subprocesses.

Each test has its own topic/index prefix, hence its own Faust app id and consumer group.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
from collections import Counter, defaultdict
from datetime import datetime
from urllib.parse import urlparse

import httpx
import orjson
import psutil
import pytest

from finsent import clients
from finsent.schemas import ControlMessage, utc_now
from model.registry import Registry
from tests.integration.stream_harness import (
    ANSWER_WITHIN_S,
    TcpProxy,
    Worker,
    es_count,
    es_docs,
    json_lines,
    make_doc,
    produce,
    read_topic,
    settle_daily_counts,
    wait_for,
)
from tests.waiting import process_gone

pytestmark = pytest.mark.integration


def scorer_pids(worker: Worker) -> list[int]:
    """The worker's scorer processes (FINSENT_WORKER_SCORER=process, the default)."""
    pids = []
    for child in psutil.Process(worker.proc.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):  # not multiprocessing's resource tracker
                pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # a short-lived child (an export, a library's helper) that ended before it was read: no scorer
    return sorted(pids)


def _start_of(iso: str, size: int) -> int:
    ts = int(datetime.fromisoformat(iso).timestamp())
    return ts - ts % size


def hand_windows(docs: list[dict], size: int) -> dict[tuple[str, int], dict]:
    """Window statistics computed directly from the indexed documents."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for doc in docs:
        for ticker in dict.fromkeys(doc["tickers"]):
            groups[(ticker, _start_of(doc["published_at"], size))].append(doc["sentiment"])
    out = {}
    for key, sentiments in groups.items():
        scores = [s["score"] for s in sentiments]
        weights = [s["confidence"] for s in sentiments]
        out[key] = {
            "count": len(sentiments),
            "counts": dict(Counter(s["label"] for s in sentiments)),
            "mean_score": statistics.fmean(scores),
            "weighted_mean_score": sum(w * s for w, s in zip(weights, scores, strict=True)) / sum(weights),
        }
    return out


def hand_volume_z(stats: dict[tuple[str, int], dict], ticker: str, start: int, size: int, baseline: int = 24):
    first = min(s for t, s in stats if t == ticker)
    counts = []
    for k in range(1, baseline + 1):
        slot = start - k * size
        if slot < first:
            break
        counts.append(stats.get((ticker, slot), {"count": 0})["count"])
    if len(counts) < 3 or statistics.stdev(counts) == 0:
        return None
    return (stats[(ticker, start)]["count"] - statistics.fmean(counts)) / statistics.stdev(counts)


def test_worker_scores_indexes_dead_letters_windows_outage_and_hot_swap(bootstrapped, tiny_model, tmp_path):
    settings = bootstrapped
    es = urlparse(settings.elasticsearch_url)
    proxy = TcpProxy(es.hostname, es.port)
    proxy.start()
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "worker.log", es_url=proxy.url)
    try:
        worker.start().wait_ready()
        # Beside /metrics, the worker's web server serves no table state and no cluster routes.
        assert [httpx.get(worker.url(path), timeout=ANSWER_WITHIN_S).status_code
                for path in ("/table/", "/router/")] == [404, 404]

        # 1. N good documents and four bad records.
        n = 120
        docs = [make_doc(i) for i in range(n)]
        oversize = orjson.dumps(make_doc(9999).model_dump(mode="json") | {"text": "x" * 200_000})
        bad = [(b"AAPL", b""), (b"AAPL", b"{not json"), (b"AAPL", b'{"id": "x", "source": "s"}'), (b"AAPL", oversize)]
        produce(settings, docs, raw=bad)
        wait_for(lambda: es_count(settings) >= n, 120, f"{n} documents indexed")
        indexed = es_docs(settings)
        assert len(indexed) == n
        assert {d["_id"] for d in indexed} == {d.id for d in docs}
        assert all(d["_id"] == d["id"] for d in indexed)
        assert {d["model_version"] for d in indexed} == {tiny_model.version}
        for d in indexed:
            assert d["sentiment"]["label"] in ("negative", "neutral", "positive")
            assert -1 <= d["sentiment"]["score"] <= 1
            assert d["scored_at"] and d["indexed_at"] >= d["ingested_at"]

        letters = json_lines(read_topic(settings, "dlq", 4))
        assert len(letters) == 4
        reasons = " | ".join(letter["reason"] for letter in letters)
        assert "empty" in reasons and "not valid JSON" in reasons and "over the limit" in reasons
        assert "invalid RawDocument" in reasons and "text" in reasons
        assert {letter["original"] for letter in letters} >= {"", "{not json"}
        assert all(letter["topic"] == settings.topic("raw") and letter["offset"] is not None for letter in letters)
        assert len(read_topic(settings, "scored", n)) >= n

        # 2. Window aggregates equal a hand computation from the indexed documents.
        expected = hand_windows(indexed, 60)
        per_ticker_total = Counter(t for d in indexed for t in dict.fromkeys(d["tickers"]))

        def day_counts_settled():
            aggs = es_docs(settings, "aggregates")
            days = {a["ticker"]: a["count"] for a in aggs if a["window"] == "1d"}
            return aggs if days == dict(per_ticker_total) else None

        aggs = wait_for(day_counts_settled, 60, "daily aggregates to count every document")
        minute_aggs = {(a["ticker"], _start_of(a["window_start"], 60)): a for a in aggs if a["window"] == "1m"}
        assert set(minute_aggs) == set(expected)
        for key, want in expected.items():
            got = minute_aggs[key]
            assert got["_id"] == f"{got['ticker']}|1m|{got['window_start']}"
            assert got["count"] == want["count"]
            assert {k: v for k, v in got["counts"].items() if v} == want["counts"]
            assert got["mean_score"] == pytest.approx(want["mean_score"], abs=1e-5)
            assert got["weighted_mean_score"] == pytest.approx(want["weighted_mean_score"], abs=1e-5)
        z_mismatch = []
        for key, got in sorted(minute_aggs.items()):
            if key[0] in ("AAPL", "TSLA"):  # their events arrive in order (one raw partition each)
                z = hand_volume_z(expected, key[0], key[1], 60)
                if got["volume_z"] != (pytest.approx(z, abs=1e-4) if z is not None else None):
                    z_mismatch.append((key, got["count"], got["volume_z"], z))
        assert not z_mismatch, z_mismatch
        assert len(read_topic(settings, "aggregates", len(minute_aggs))) >= len(minute_aggs)

        # 3. Elasticsearch goes away: the worker holds the stream, reports unhealthy, loses nothing.
        proxy.stop()
        more = [make_doc(i, tag="outage") for i in range(40)]
        produce(settings, more)
        no_retries = "finsent_stream_es_retries_total 0.0"
        wait_for(lambda: (m := worker.metrics_or_none()) is not None and no_retries not in m, 90,
                 "the worker to find Elasticsearch away")
        wait_for(lambda: (h := worker.health()) is not None and h[0] == 503, 60, "health 503 while ES is away")
        assert es_count(settings) == n
        proxy.start()
        wait_for(lambda: es_count(settings) >= n + len(more), 120, "documents held during the outage")
        assert {d["_id"] for d in es_docs(settings)} == {d.id for d in docs + more}
        wait_for(lambda: (h := worker.health()) is not None and h[0] == 200, 60, "health 200 again")

        # 4. A drift message is ignored; a promotion swaps the model between batches, the new model
        # loaded beside the old one in the same scorer process.
        first_scorer = scorer_pids(worker)
        assert len(first_scorer) == 1, first_scorer
        other = tmp_path / "model-b"
        shutil.copytree(tiny_model.path, other)
        (other / "metadata.json").unlink(missing_ok=True)  # the scorer then names it after its folder
        producer = clients.kafka_producer(settings)
        # First the late message of the move that made the worker's champion (it started from that move): ignored.
        # The promotion after it has no number (an older sender's, or bench memory's): applied as it comes.
        started_from = Registry(tiny_model.registry_root).pointer()
        late_move = ControlMessage(action="promote", model_version="late-move", model_path=str(tiny_model.path),
                                   reason="test", issued_at=utc_now(), **started_from.control_fields())
        assert late_move.sequence is not None  # the tiny registry is read only: the worker started from this move
        producer.send(settings.topic("control"), value=late_move.to_json())
        for action in ("drift", "promote"):
            message = ControlMessage(action=action, model_version="local:model-b", model_path=str(other),
                                     reason="test", issued_at=utc_now())
            producer.send(settings.topic("control"), value=message.to_json())
        producer.flush()
        producer.close()
        wait_for(lambda: (h := worker.health()) and h[1].get("model_version") == "local:model-b", 120,
                 "the promoted model")
        late = [make_doc(i, tag="swap") for i in range(20)]
        produce(settings, late)
        wait_for(lambda: es_count(settings) >= n + len(more) + len(late), 120, "documents after the swap")
        by_id = {d["_id"]: d for d in es_docs(settings)}
        assert {by_id[d.id]["model_version"] for d in late} == {"local:model-b"}
        assert {by_id[d.id]["model_version"] for d in docs} == {tiny_model.version}
        # Counted once the broker also has their scored records and window events (stream.pipeline): a moment
        # after Elasticsearch shows the documents.
        counted = f"finsent_stream_documents_indexed_total {float(n + len(more) + len(late))}"
        wait_for(lambda: (m := worker.metrics_or_none()) is not None and counted in m, 30,
                 "the documents counted as indexed")
        metrics = worker.metrics()
        assert "finsent_stream_model_swaps_total 1.0" in metrics  # the late move was not loaded
        ignored = (f"control: ignoring promote of late-move: move {late_move.sequence} of registry "
                   f"{late_move.registry_id}")
        assert ignored in worker.log.read_text(errors="replace")
        assert 'finsent_stream_model_info{version="local:model-b"} 1.0' in metrics
        assert 'finsent_stream_dead_letters_total{stage="validate"} 4.0' in metrics
        wait_for(lambda: f"model {tiny_model.version} is no longer used; closing it" in worker.tail(400), 30,
                 "the old model to be closed")
        second_scorer = scorer_pids(worker)
        assert second_scorer == first_scorer

        # 5. The scorer process is killed mid-stream: it starts again, and no document is lost or dead-lettered.
        killed = [make_doc(i, tag="scorer-killed") for i in range(60)]
        produce(settings, killed, pause_every=10, pause=0.1)
        wait_for(lambda: es_count(settings) >= n + len(more) + len(late) + 1, 60, "the first of them")
        os.kill(second_scorer[0], signal.SIGKILL)
        wait_for(lambda: es_count(settings) >= n + len(more) + len(late) + len(killed), 120,
                 "every document after the scorer process was killed")
        assert scorer_pids(worker) not in ([], second_scorer)
        assert {d["_id"] for d in es_docs(settings)} == {d.id for d in docs + more + late + killed}
        assert 'finsent_stream_dead_letters_total{stage="score"}' not in worker.metrics()
        assert "starting the scorer process of model local:model-b again" in worker.tail(400)
        assert worker.samples("finsent_stream_scorer_restarts_total") == {(): 1.0}

        # 6. SIGTERM: a clean stop, the scorer process with it.
        last_scorer = scorer_pids(worker)
        assert worker.terminate() == 0
        wait_for(lambda: all(process_gone(pid) for pid in last_scorer), 30, "the scorer process to end with the worker")
    finally:
        worker.ensure_stopped()
        proxy.stop()


def test_kill_9_and_two_workers_index_every_document_exactly_once(bootstrapped, tiny_model, tmp_path):
    settings = bootstrapped
    # The killed member's partitions wait for its session to time out; 10 s instead of a minute.
    first = Worker(settings, tiny_model.registry_root, tmp_path / "s1", tmp_path / "w1.log",
                   FINSENT_WORKER_SESSION_TIMEOUT="10")
    second = third = None
    try:
        first.start().wait_ready()
        docs = [make_doc(i, tag="k") for i in range(300)]
        produce(settings, docs[:150])
        wait_for(lambda: es_count(settings) >= 40, 120, "the first documents")
        first.kill()  # mid-stream: some batches indexed, offsets committed or not

        second = Worker(settings, tiny_model.registry_root, tmp_path / "s2", tmp_path / "w2.log").start()
        third = Worker(settings, tiny_model.registry_root, tmp_path / "s3", tmp_path / "w3.log").start()
        second.wait_ready()
        third.wait_ready()
        produce(settings, docs[150:], pause_every=50, pause=0.2)
        # The dead member holds its partitions until its session times out (10 s); then two rebalances.
        wait_for(lambda: es_count(settings) >= len(docs), 300, "every document after kill -9 and rebalance")
        indexed = es_docs(settings)
        assert len(indexed) == len(docs)
        assert sorted(d["_id"] for d in indexed) == sorted(d.id for d in docs)

        # Both workers took part, and the windows counted each document once despite the replay.
        consumed = [w.samples("finsent_stream_consumed_total")[()] for w in (second, third)]
        assert all(c > 0 for c in consumed), consumed
        # Between them they own every partition, and each owns some (their /health says how many).
        def shared() -> bool:
            read = [w.samples_or_none("finsent_stream_assigned_partitions") for w in (second, third)]
            owned = [samples[()] for samples in read if samples is not None]
            return len(owned) == 2 and sum(owned) == settings.topic_partitions and all(owned)

        wait_for(shared, 60, "the partitions shared")
        per_ticker_total = Counter(t for d in indexed for t in dict.fromkeys(d["tickers"]))

        settle_daily_counts(settings, dict(per_ticker_total), 90, "daily aggregates equal to the documents")
        assert second.terminate() == 0
        assert third.terminate() == 0
    finally:
        for w in (first, second, third):
            if w is not None:
                w.ensure_stopped()


def test_worker_takes_up_partitions_added_while_it_runs(bootstrapped, tiny_model, tmp_path):
    """Partitions that appear after the group formed (added by an operator, or a topic that was
    created just before the join and not yet in the broker's metadata) are consumed within
    seconds, not at the client's next scheduled metadata refresh minutes later."""
    from kafka.admin import NewPartitions

    settings = bootstrapped
    grown = settings.topic_partitions + 2
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "s", tmp_path / "w.log")
    try:
        worker.start().wait_ready()
        assert worker.health()[1]["partitions"] == settings.topic_partitions  # ready means joined
        first = [make_doc(i, tag="joined") for i in range(10)]
        produce(settings, first)  # indexed only once the group has formed with the old partitions
        wait_for(lambda: es_count(settings) >= len(first), 120, "the documents sent before the growth")
        admin = clients.kafka_admin(settings)
        try:
            admin.create_partitions({settings.topic("raw"): NewPartitions(total_count=grown)})
        finally:
            admin.close()
        docs = [make_doc(i, tag="grow") for i in range(40)]
        producer = clients.kafka_producer(settings, metadata_max_age_ms=1000)  # it may look before the growth shows
        try:
            wait_for(lambda: len(producer.partitions_for(settings.topic("raw")) or ()) == grown, 30,
                     "the new partitions in the producer's metadata")
            for i, doc in enumerate(docs):  # only into the partitions the worker was never given
                producer.send(settings.topic("raw"), key=doc.tickers[0].encode(), value=doc.to_json(),
                              partition=settings.topic_partitions + i % 2)
            producer.flush()
        finally:
            producer.close()
        wait_for(lambda: (h := worker.health()) is not None and h[1]["partitions"] == grown, 60,
                 "the added partitions in the worker's /health")
        wait_for(lambda: es_count(settings) >= len(first) + len(docs), 90,
                 f"documents in the added partitions (worker log {worker.log})")
        assert sorted(d["_id"] for d in es_docs(settings)) == sorted(d.id for d in first + docs)
        per_ticker = Counter(t for d in first + docs for t in dict.fromkeys(d.tickers))
        settle_daily_counts(settings, dict(per_ticker), 60, "daily aggregates of the added partitions")
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()


def test_a_worker_started_with_more_partitions_keeps_the_window_topics_count(bootstrapped, tiny_model, tmp_path):
    """FINSENT_TOPIC_PARTITIONS raised once the window topics exist: the worker keeps their count, so
    each ticker's window state stays beside its events and its daily count carries on."""
    from stream.window_partitions import existing_counts

    settings = bootstrapped
    before = [make_doc(i, tag="before") for i in range(12)]
    after = [make_doc(i, tag="after") for i in range(12, 30)]
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "s", tmp_path / "w1.log")
    try:
        worker.start().wait_ready()
        produce(settings, before)
        settle_daily_counts(settings, dict(Counter(t for d in before for t in d.tickers)), 90,
                            "daily aggregates of the first worker")
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()
    counts = existing_counts(settings)
    assert len(counts) == 2 and set(counts.values()) == {settings.topic_partitions}

    grown = str(settings.topic_partitions + 2)
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "s", tmp_path / "w2.log",
                    FINSENT_TOPIC_PARTITIONS=grown)
    try:
        worker.start().wait_ready()
        produce(settings, after)
        settle_daily_counts(settings, dict(Counter(t for d in before + after for t in d.tickers)), 90,
                            f"daily aggregates across the restart (worker log {worker.log})")
        assert worker.health()[0] == 200
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()
    assert existing_counts(settings) == counts
    assert "keep them (FINSENT_TOPIC_PARTITIONS says " + grown in worker.log.read_text(encoding="utf-8")
