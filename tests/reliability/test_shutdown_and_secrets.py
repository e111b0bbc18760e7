"""Graceful shutdown and secret hygiene of every long-running process.

Each process runs with every secret setting filled in and ``FINSENT_LOG_LEVEL=DEBUG``, does
its job (requests with right and wrong tokens, a signed webhook, documents scored), gets
SIGTERM and must exit 0 having flushed and committed; then its whole output is searched
for the secret values, which must never appear.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from alerts.receiver import WebhookReceiver
from finsent import clients
from finsent.schemas import Aggregate
from finsent.services import local_credentials
from tests.integration.stream_harness import make_doc, produce, read_topic, wait_for
from tests.reliability.processes import Proc, env_for, free_port

pytestmark = pytest.mark.integration

SECRETS = {
    "FINSENT_PUSH_TOKEN": "push-tok-3b1f9e",
    "FINSENT_LABEL_TOKEN": "label-tok-77c2aa",
    "FINSENT_ALERTS_WEBHOOK_SECRET": "hook-secret-91d0c4",
    "FINSENT_KAFKA_SASL_PASSWORD": "kafka-pass-0a8d33",  # set but unused (PLAINTEXT): must still not show
    "FINSENT_KIBANA_PASSWORD": "kibana-pass-c4e812",
    "FINSENT_KIBANA_API_KEY": "kibana-key-6f19b0",
}


def secrets_of(settings) -> dict[str, str]:
    """:data:`SECRETS` and the local Elasticsearch's real password: it has security on, so a made-up one gets 401."""
    password = local_credentials.read_password(settings.cache_dir, settings.elasticsearch_port)
    assert password, "the local Elasticsearch has no password kept"
    return SECRETS | {"FINSENT_ELASTICSEARCH_USERNAME": local_credentials.USER,
                      "FINSENT_ELASTICSEARCH_PASSWORD": password}


def secret_env(settings, state_dir, **extra):
    return env_for(settings, state_dir, FINSENT_LOG_LEVEL="DEBUG", **secrets_of(settings), **extra)


def assert_no_secret(settings, *outputs: str) -> None:
    text = "\n".join(outputs)
    leaked = [name for name, value in secrets_of(settings).items()
              if value in text and name != "FINSENT_ELASTICSEARCH_USERNAME"]
    assert not leaked, f"secret values of {leaked} appear in the output"


def committed_lag(settings, group: str, topic: str) -> int:
    """Records of ``topic`` not covered by ``group``'s committed offsets."""
    from kafka import TopicPartition

    consumer = clients.kafka_consumer(settings, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(parts)
        committed = {tp: consumer.committed(tp) or 0 for tp in parts}
    finally:
        consumer.close(autocommit=False)
    return sum(end - committed[tp] for tp, end in ends.items())


def test_config_command_never_prints_a_secret(settings, tmp_path):
    import subprocess

    from tests.integration.stream_harness import FINSENT

    shown = subprocess.run([str(FINSENT), "config"], env=secret_env(settings, tmp_path), capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "FINSENT_PUSH_TOKEN" in shown.stdout
    assert_no_secret(settings, shown.stdout, shown.stderr)


def test_ingest_serve(bootstrapped, tmp_path):
    port = free_port()
    # No --port: the endpoint binds FINSENT_PUSH_PORT, as `finsent up` and the README say.
    proc = Proc(["ingest", "serve"], secret_env(bootstrapped, tmp_path / "s", FINSENT_PUSH_PORT=str(port)),
                tmp_path / "ingest.log").start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
        base = f"http://127.0.0.1:{port}/documents"
        right = {"Authorization": f"Bearer {SECRETS['FINSENT_PUSH_TOKEN']}"}
        docs = [{"text": f"Apple shares rise {i}", "source": "sd", "source_id": str(i)} for i in range(20)]
        assert httpx.post(base, json=docs, headers=right, timeout=30).status_code == 202
        assert httpx.post(base, json=docs[0], headers={"Authorization": "Bearer guess"}, timeout=30).status_code == 401
        assert proc.terminate() == 0, proc.tail()
    finally:
        proc.ensure_stopped()
    assert len(read_topic(bootstrapped, "raw", 20)) == 20  # acknowledged documents were flushed
    assert_no_secret(bootstrapped, proc.output())


def test_labels_serve(bootstrapped, tmp_path):
    port = free_port()
    proc = Proc(["labels", "serve", "--port", str(port)], secret_env(bootstrapped, tmp_path / "s"),
                tmp_path / "labels.log").start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/metrics")
        auth = {"Authorization": f"Bearer {SECRETS['FINSENT_LABEL_TOKEN']}"}
        answer = httpx.post(f"http://127.0.0.1:{port}/labels", json={"text": "Apple beats", "label": "positive"},
                            headers=auth, timeout=30)
        assert answer.status_code == 202, answer.text
        assert httpx.get(f"http://127.0.0.1:{port}/review", timeout=30).status_code == 401
        assert proc.terminate() == 0, proc.tail()
    finally:
        proc.ensure_stopped()
    assert len(read_topic(bootstrapped, "labels", 1)) == 1
    assert_no_secret(bootstrapped, proc.output())


def test_alerts_run_commits_and_delivers_signed(bootstrapped, tmp_path):
    settings = bootstrapped
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    agg = Aggregate(ticker="AAPL", window="15m", window_start=start, window_end=start + timedelta(minutes=15),
                    count=40, counts={"negative": 35, "neutral": 5, "positive": 0}, mean_score=-0.6,
                    weighted_mean_score=-0.6, sentiment_z=-5.0, volume_z=1.0, updated_at=start)
    with WebhookReceiver(SECRETS["FINSENT_ALERTS_WEBHOOK_SECRET"]) as receiver:
        rules = tmp_path / "rules.yml"
        rules.write_text(f"webhooks:\n  ops: {{url: '{receiver.url}'}}\n"
                         "rules:\n  - {name: shift, kind: sentiment_shift, threshold: 3, min_count: 10,"
                         " min_history: 2}\n")
        proc = Proc(["alerts", "run", "--rules", str(rules), "--metrics-port", "0"],
                    secret_env(settings, tmp_path / "s", FINSENT_ALERTS_OFFSET_RESET="earliest"),
                    tmp_path / "alerts.log").start()
        try:
            producer = clients.kafka_producer(settings)
            producer.send(settings.topic("aggregates"), key=b"AAPL", value=agg.to_json())
            producer.flush(30)
            producer.close(10)
            wait_for(lambda: receiver.delivered or not proc.alive, 120, "the signed alert")
            assert proc.terminate() == 0, proc.tail()
        finally:
            proc.ensure_stopped()
    assert len(receiver.delivered) == 1 and receiver.delivered[0].verified
    assert committed_lag(settings, f"{settings.topic_prefix}-alerts", settings.topic("aggregates")) == 0
    assert_no_secret(settings, proc.output(), *(r.body.decode() for r in receiver.received))


def test_retrain_scheduler(bootstrapped, model_registry, tmp_path):
    env = secret_env(bootstrapped, tmp_path / "s", FINSENT_MODEL_DIR=model_registry.root,
                     FINSENT_RETRAIN_METRICS_PORT=0, FINSENT_DRIFT_CHECK_MINUTES=60)
    proc = Proc(["retrain", "scheduler"], env, tmp_path / "scheduler.log").start()
    try:
        proc.wait_output("drift-check:", timeout=120)
        # retention is on by default and deletes data, so the start says what it deletes
        proc.wait_output("index-retention deletes documents scored more than 90 days ago and windows started more "
                         "than 90 days ago", timeout=30)
        time.sleep(1)  # let the label indexer thread connect, so its shutdown is exercised too
        assert proc.terminate() == 0, proc.tail()
    finally:
        proc.ensure_stopped()
    assert_no_secret(bootstrapped, proc.output())


def test_dashboards_serve(bootstrapped, tmp_path):
    port = free_port()
    proc = Proc(["dashboards", "serve", "--port", str(port)], secret_env(bootstrapped, tmp_path / "s"),
                tmp_path / "dash.log").start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/health", ok=(200, 503))
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
        assert proc.terminate() == 0, proc.tail()
    finally:
        proc.ensure_stopped()
    assert_no_secret(bootstrapped, proc.output())


@pytest.mark.slow
def test_stream_worker_commits_everything_on_sigterm(bootstrapped, tiny_model, tmp_path):
    from tests.integration.stream_harness import Worker, es_count

    settings = bootstrapped
    docs = [make_doc(i, tag="term") for i in range(60)]
    worker = Worker(settings, tiny_model.registry_root, tmp_path / "state", tmp_path / "w.log",
                    FINSENT_LOG_LEVEL="DEBUG",
                    **{k: v for k, v in secrets_of(settings).items() if k != "FINSENT_KAFKA_SASL_PASSWORD"})
    try:
        worker.start().wait_ready(timeout=180)
        produce(settings, docs)
        wait_for(lambda: es_count(settings) >= len(docs), 180, "every document indexed")
        assert worker.terminate() == 0, worker.tail()
    finally:
        worker.ensure_stopped()
    assert committed_lag(settings, f"{settings.topic_prefix}-stream", settings.topic("raw")) == 0
    assert_no_secret(settings, worker.log.read_text(errors="replace"))
    assert orjson.loads(read_topic(settings, "scored", 1)[0].value)["id"]
