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
import sys
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
    settle_daily_counts,
    wait_for,
)
from tests.ports import free_ports
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
    settle_daily_counts(settings, per_ticker, timeout, "daily aggregates to count every document once")


def check(figures: dict) -> None:
    assert figures["lost"] == 0 and figures["doubled"] == 0, figures
    assert figures["aggregate_doubles"] == 0 and figures["aggregate_missing"] == 0, figures


def test_kill_9_mid_batch(bootstrapped, tiny_model, tmp_path):
    settings = bootstrapped
    docs = [make_doc(i, tag="k9") for i in range(240)]
    # The second worker waits for the killed one's session to time out: 10 s instead of a minute.
    first = Worker(settings, tiny_model.registry_root, tmp_path / "s1", tmp_path / "w1.log",
                   FINSENT_WORKER_SESSION_TIMEOUT="10")
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


def test_records_dropped_between_fetch_and_agent_are_fetched_again(bootstrapped, tiny_model, tmp_path):
    """Part of a fetch never reaches the agent while the client's position moved past it (what
    Faust's getmany does on a generation change mid-batch), once on the raw topic and once on
    the window events: the worker rewinds to the hole at once, and every document is indexed
    and counted once. Without the rewind Faust commits over the hole when later records come,
    or the partition stalls until the stall watch (kept out of reach here) rewinds it."""
    settings = bootstrapped
    docs = [make_doc(i, tag="gap") for i in range(240)]
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "s", tmp_path / "w.log",
                    program=[sys.executable, str(ROOT / "tests" / "integration" / "dropping_worker.py")],
                    FINSENT_TEST_DROP=".raw:10,.stream-window-events:10", FINSENT_WORKER_STALL_AFTER="600")
    try:
        worker.start().wait_ready(timeout=180)
        produce(settings, docs, pause_every=20, pause=0.5)  # records keep coming after each drop
        wait_for(lambda: es_count(settings) >= len(docs), 240, "every document despite the drops")
        settle_aggregates(settings, docs)
        figures = index_figures(settings, docs)
        rewinds = {dict(labels)["topic"]: n for labels, n in worker.samples("finsent_stream_gap_rewinds_total").items()}
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()
    log = worker.log.read_text(errors="replace")
    record("fault.fetch_drop", **figures)
    assert log.count("test drop:") == 2, worker.tail()
    assert "stalled:" not in log
    assert rewinds.get(settings.topic("raw"), 0) >= 1 and rewinds.get(
        f"{settings.topic_prefix}.stream-window-events", 0) >= 1, rewinds
    check(figures)


def test_records_deleted_by_retention_while_no_worker_ran_are_skipped_not_waited_for(bootstrapped, tiny_model,
                                                                                     tmp_path):
    """The committed offsets point at records that retention deleted while no worker ran. The
    worker first takes the hole for dropped records and rewinds once; the same hole after the
    rewind means the records are gone, so it goes on from the log's start instead of stalling."""
    from kafka import TopicPartition

    settings = bootstrapped
    first = [make_doc(i, tag="ret") for i in range(30)]
    later = [make_doc(i, tag="ret") for i in range(30, 110)]
    workers = [Worker(settings, tiny_model.registry_root, tmp_path / f"s{n}", tmp_path / f"w{n}.log",
                      FINSENT_WORKER_STALL_AFTER="600") for n in (1, 2)]
    try:
        workers[0].start().wait_ready(timeout=180)
        produce(settings, first)
        wait_for(lambda: es_count(settings) >= len(first), 120, "the first documents")
        assert workers[0].terminate() == 0  # every raw offset committed

        producer = clients.kafka_producer(settings)
        try:
            futures = [(doc, producer.send(settings.topic("raw"), key=doc.tickers[0].encode(), value=doc.to_json()))
                       for doc in later]
            placed = {doc.id: future.get(timeout=30) for doc, future in futures}
        finally:
            producer.close()
        arrived: dict[int, list[int]] = {}
        for meta in placed.values():
            arrived.setdefault(meta.partition, []).append(meta.offset)
        # Retention deletes the older half of what arrived in each partition while no worker ran.
        log_start = {p: sorted(offsets)[len(offsets) // 2] for p, offsets in arrived.items() if len(offsets) >= 2}
        admin = clients.kafka_admin(settings)
        try:
            admin.delete_records({TopicPartition(settings.topic("raw"), p): o for p, o in log_start.items()})
        finally:
            admin.close()
        kept = [d for d in later if placed[d.id].offset >= log_start.get(placed[d.id].partition, 0)]
        assert 0 < len(kept) < len(later)

        workers[1].start().wait_ready(timeout=180)
        wait_for(lambda: es_count(settings) >= len(first) + len(kept), 120, "the documents retention kept")
        assert {d["_id"] for d in es_docs(settings)} == {d.id for d in first + kept}
        assert workers[1].terminate() == 0
    finally:
        for w in workers:
            w.ensure_stopped()
    log = workers[1].log.read_text(errors="replace")
    assert "are not in the log" in log, workers[1].tail()
    assert "stalled:" not in log


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
    ports = free_ports(2)  # below the ephemeral range, where no client connection can take one first (tests.ports)
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


RECEIVER_DOWN_S = float(os.environ.get("RELIABILITY_RECEIVER_DOWN_S", "10"))


def test_webhook_receiver_down_then_up_delivers_every_alert_once(bootstrapped, tmp_path):
    """Alerts raised while the receiver is down, across an engine restart: each delivered once."""
    from datetime import UTC, datetime, timedelta

    from alerts.receiver import WebhookReceiver
    from finsent.schemas import Aggregate
    from tests.reliability.processes import Proc, env_for, free_port

    settings = bootstrapped
    secret = "fault-hook-secret"
    port = free_port()
    rules = tmp_path / "rules.yml"
    rules.write_text(f"webhooks:\n  ops: {{url: 'http://127.0.0.1:{port}/hook', timeout: 2, backoff_initial: 1s, "
                     "backoff_max: 2s, max_attempts: 100}\n"
                     "rules:\n  - {name: shift, kind: sentiment_shift, threshold: 3, min_count: 10, min_history: 2}\n")
    env = env_for(settings, tmp_path / "s", FINSENT_ALERTS_WEBHOOK_SECRET=secret, FINSENT_ALERTS_OFFSET_RESET="earliest",
                  FINSENT_ALERTS_METRICS_PORT=0)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    tickers = ["AAPL", "MSFT", "TSLA", "NVDA", "JPM", "XOM"]
    aggs = [Aggregate(ticker=t, window="15m", window_start=start, window_end=start + timedelta(minutes=15), count=40,
                      counts={"negative": 35, "neutral": 5, "positive": 0}, mean_score=-0.6, weighted_mean_score=-0.6,
                      sentiment_z=-5.0, volume_z=1.0, updated_at=start) for t in tickers]
    producer = clients.kafka_producer(settings)
    for agg in aggs:
        producer.send(settings.topic("aggregates"), key=agg.ticker.encode(), value=agg.to_json())
    producer.flush(30)
    producer.close(10)

    def alerts_in_index() -> list[dict]:
        with clients.elasticsearch(settings) as es:
            es.indices.refresh(index=settings.index("alerts"))
            return [h["_source"] for h in es.search(index=settings.index("alerts"), size=100)["hits"]["hits"]]

    first = Proc(["alerts", "run", "--rules", str(rules)], env, tmp_path / "a1.log").start()
    second = None
    receiver = WebhookReceiver(secret, port=port)
    try:
        wait_for(lambda: len(alerts_in_index()) == len(aggs) or not first.alive, 120, "every alert raised")
        time.sleep(RECEIVER_DOWN_S)  # deliveries fail and back off
        assert first.terminate() == 0, first.tail()  # a restart while the receiver is still down
        assert {a["status"] for a in alerts_in_index()} == {"pending"}
        second = Proc(["alerts", "run", "--rules", str(rules)], env, tmp_path / "a2.log").start()
        receiver.start()
        wait_for(lambda: {a["status"] for a in alerts_in_index()} == {"delivered"} or not second.alive, 120,
                 "every alert delivered")
        assert second.terminate() == 0, second.tail()
    finally:
        receiver.stop()
        for proc in (first, second):
            if proc is not None:
                proc.ensure_stopped()
    raised = alerts_in_index()
    keys = [r.headers.get("X-Finsent-Idempotency-Key") for r in receiver.received if r.verified]
    delivered = {r.headers.get("X-Finsent-Idempotency-Key") for r in receiver.delivered}
    record("fault.webhook_receiver_down", receiver_down_s=RECEIVER_DOWN_S, alerts_raised=len(raised),
           delivered=len(delivered), lost=len({a["idempotency_key"] for a in raised} - delivered),
           doubled=len(keys) - len(set(keys)), attempts_max=max(a["attempts"] for a in raised))
    assert len(raised) == len(aggs) and delivered == {a["idempotency_key"] for a in raised}
    assert len(keys) == len(set(keys)), "an alert reached the receiver twice"
    # Failed attempts while it was down (the other alerts of a failing webhook wait without spending any).
    assert max(a["attempts"] for a in raised) >= 2


# model.training logs it once the model is loaded, just before the first step (and the first stop check).
TRAINING_STEPS_BEGIN = "model.training: training on "


def _retrain_running(lock_path) -> bool:
    """Whether some process holds the retrain lock (read from /proc/locks, without taking it)."""
    try:
        inode = os.stat(lock_path).st_ino
    except FileNotFoundError:
        return False
    with open("/proc/locks") as fh:
        return any(line.split()[5].split(":")[-1] == str(inode) for line in fh if "FLOCK" in line)


def test_scheduler_killed_mid_retrain(bootstrapped, model_registry, tmp_path):
    """kill -9 during training: the champion is intact, nothing half-promoted. A SIGTERM during training ends it
    at once, recorded as stopped. A restart completes."""
    from tests.integration.test_retrain_flow import SHARED_DATA, control_messages, index_docs, index_fresh_labels
    from tests.reliability.processes import Proc, env_for

    settings = bootstrapped.model_copy(update={"model_dir": model_registry.root})
    champion = model_registry.champion()
    index_docs(settings, champion, drifting=True)
    index_fresh_labels(settings)
    state = tmp_path / "state"
    env = env_for(settings, state, FINSENT_RETRAIN_DATA=SHARED_DATA, FINSENT_GOLDEN_SIZE=30,
                  FINSENT_RETRAIN_REPLAY_ROWS=40, FINSENT_RETRAIN_BATCH_SIZE=8, FINSENT_RETRAIN_EPOCHS=1,
                  FINSENT_RETRAIN_MIN_LABELS=20, FINSENT_RETRAIN_MIN_FRESH_EVAL=1, FINSENT_RETRAIN_CRON="",
                  FINSENT_DRIFT_REFERENCE_SIZE=60, FINSENT_DRIFT_WINDOW_SIZE=40, FINSENT_DRIFT_MIN_LABELS=20,
                  FINSENT_DRIFT_CHECK_MINUTES=0.02, FINSENT_RETRAIN_METRICS_PORT=0, FINSENT_RETRAIN_GOLDEN_TOLERANCE=1.0)
    lock = state / "retrain" / "retrain.lock"
    first = Proc(["retrain", "scheduler", "--no-indexer"], env | {"FINSENT_RETRAIN_MAX_STEPS": "400"},
                 tmp_path / "s1.log").start()
    second = None
    try:
        wait_for(lambda: _retrain_running(lock) or not first.alive, 240, "a retrain to start")
        first.wait_output(TRAINING_STEPS_BEGIN, 240)  # into the training loop (3 s fell short on a busy machine)
        assert _retrain_running(lock), first.tail()
        first.kill()
        versions = sorted(p.name for p in model_registry.versions_dir.iterdir())
        intact = model_registry.champion() == champion and model_registry.get(champion)["version"] == champion
        half = [v for v in versions if not v.startswith(".") and not model_registry.exists(v)]
        promoted_then = [m for m in control_messages(settings) if m["action"] == "promote"]
        assert not _retrain_running(lock)  # the lock died with the process

        # 4,000 steps would take minutes: the stop must not wait for them.
        middle = Proc(["retrain", "scheduler", "--no-indexer"], env | {"FINSENT_RETRAIN_MAX_STEPS": "4000"},
                      tmp_path / "s-term.log").start()
        try:
            wait_for(lambda: _retrain_running(lock) or not middle.alive, 240, "the second retrain to start")
            middle.wait_output(TRAINING_STEPS_BEGIN, 240)  # the stop then lands at a step, not "before training began"
            assert middle.terminate() == 0, middle.tail()
        finally:
            middle.ensure_stopped()
        audit = state / "retrain" / "audit.jsonl"
        [term] = [orjson.loads(x) for x in audit.read_text().splitlines()]
        assert term["decision"] == "stopped" and term["reasons"].startswith("training stopped at step"), term
        assert sorted(p.name for p in model_registry.versions_dir.iterdir()) == versions

        second = Proc(["retrain", "scheduler", "--no-indexer"], env | {"FINSENT_RETRAIN_MAX_STEPS": "3"},
                      tmp_path / "s2.log").start()

        def decided():
            assert second.alive, second.tail()
            lines = audit.read_text().splitlines() if audit.exists() else []
            done = [orjson.loads(x) for x in lines if orjson.loads(x)["decision"] in ("promoted", "rejected", "failed")]
            return done or None

        done = wait_for(decided, 300, "the retrain to complete after the restart")
        assert second.terminate() == 0, second.tail()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.ensure_stopped()
    now_champion = model_registry.champion()
    promotes = [m for m in control_messages(settings) if m["action"] == "promote"]
    record("fault.scheduler_killed_mid_retrain", champion_intact_after_kill=intact, half_registered=len(half),
           promote_messages_after_kill=len(promoted_then), decision_after_restart=done[0]["decision"],
           completed_retrains=len(done), champion_changed=now_champion != champion)
    assert intact and not half and not promoted_then
    assert len(done) == 1 and done[0]["decision"] in ("promoted", "rejected"), done
    if done[0]["decision"] == "promoted":
        assert now_champion == done[0]["challenger_version"] and model_registry.exists(now_champion)
        assert [m["model_version"] for m in promotes] == [now_champion]
    else:
        assert now_champion == champion and not promotes
