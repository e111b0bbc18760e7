"""The embedded real servers: produce/consume through Kafka, index/search in Elasticsearch,
and the full up → status → down cycle of a second, private pair of servers."""

from __future__ import annotations

import shutil
import socket
import time
import uuid

import httpx
import psutil
import pytest

from finsent import clients, topology
from finsent.services import local_credentials, manager
from finsent.services.process import ServiceError
from tests.conftest import ROOT
from tests.ports import free_ports
from tests.topic_reading import read_to_end
from tests.waiting import process_gone, wait_for

pytestmark = pytest.mark.integration


def test_produce_and_consume_through_real_kafka(bootstrapped):
    topic = bootstrapped.topic("raw")
    producer = clients.kafka_producer(bootstrapped)
    for i in range(20):
        producer.send(topic, key=b"AAPL", value=f'{{"n": {i}}}'.encode())
    producer.flush()
    producer.close()
    consumer = clients.kafka_consumer(bootstrapped, topic, group_id=f"{bootstrapped.topic_prefix}-test")
    try:  # the group forms, then every record up to the end offsets the flush left
        values = sorted(int(m.value.decode().split(":")[1].strip(" }")) for m in read_to_end(consumer))
    finally:
        consumer.close()
    assert values == list(range(20))


def test_group_consumer_knows_its_partitions_before_it_joins(bootstrapped, caplog):
    """The first rebalance assigns every partition: no "No partition metadata" warning, no second join."""
    topics = [bootstrapped.topic("scored"), bootstrapped.topic("labels")]
    group = f"{bootstrapped.topic_prefix}-warm-{uuid.uuid4()}"
    consumer = clients.kafka_consumer(bootstrapped, *topics, group_id=group)
    try:
        with caplog.at_level("WARNING", logger="kafka"):
            deadline = time.monotonic() + 30
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
        owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    finally:
        consumer.close()
    assert owned == {(t, p) for t in topics for p in range(bootstrapped.topic_partitions)}
    assert not [r for r in caplog.records if "No partition metadata" in r.getMessage()]


def _retention_ms(admin, topic: str) -> str | None:
    from kafka.admin import ConfigResource, ConfigResourceType

    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
    return described.get("retention.ms", {}).get("value")


def test_topics_have_configured_partitions_and_the_dlq_its_retention(bootstrapped):
    admin = clients.kafka_admin(bootstrapped)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(
            [bootstrapped.topic(n) for n in topology.TOPICS])}
        assert described[bootstrapped.topic("raw")] == bootstrapped.topic_partitions
        assert described[bootstrapped.topic("control")] == 1
        assert _retention_ms(admin, bootstrapped.topic("dlq")) == str(30 * 86_400_000)
        assert _retention_ms(admin, bootstrapped.topic("raw")) is None  # the broker's default
        assert topology.ensure_topics(admin, bootstrapped) == []  # idempotent

        longer = bootstrapped.model_copy(update={"dlq_retention_days": 90})
        assert topology.ensure_topics(admin, longer) == []
        # It reaches an existing topic. The broker applies the controller's change a moment later: a describe
        # right after the change read the old value once (CI, twenty-eighth session).
        dlq = bootstrapped.topic("dlq")
        wait_for(lambda: _retention_ms(admin, dlq) == str(90 * 86_400_000), 30, f"{dlq}'s retention of 90 days")
    finally:
        admin.close()


def test_init_refuses_a_control_topic_with_more_partitions_and_warns_on_other_counts(settings, caplog):
    from kafka.admin import NewTopic

    other = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "b"})
    admin = clients.kafka_admin(settings)
    try:
        admin.create_topics([NewTopic(settings.topic("raw"), settings.topic_partitions + 1, 1),
                             NewTopic(settings.topic("control"), 1, 1)])
        wait_for(lambda: {settings.topic("raw"), settings.topic("control")} <= set(admin.list_topics()), 30,
                 "the new topics in the metadata")
        with caplog.at_level("WARNING", logger="finsent.topology"):
            topology.ensure_topics(admin, settings)
        assert f"topic {settings.topic('raw')} has {settings.topic_partitions + 1} partitions" in caplog.text

        admin.create_topics([NewTopic(other.topic("control"), 3, 1)])
        wait_for(lambda: other.topic("control") in admin.list_topics(), 30, "the new topic in the metadata")
        with pytest.raises(RuntimeError, match=f"topic {other.topic('control')} has 3 partitions"):
            topology.ensure_topics(admin, other)
    finally:
        admin.close()
        manager.remove_prefixed(other)


def test_remove_prefixed_deletes_one_prefix_and_nothing_else(bootstrapped):
    from kafka.admin import NewTopic

    other = bootstrapped.model_copy(update={"topic_prefix": bootstrapped.topic_prefix + "x",
                                            "index_prefix": bootstrapped.index_prefix + "x"})
    manager.init(other, echo=lambda m: None)
    admin = clients.kafka_admin(bootstrapped)
    try:
        admin.create_topics([NewTopic(f"{bootstrapped.topic_prefix}-worker-windows-changelog", 1, 1)])  # Faust's kind
        manager.remove_prefixed(bootstrapped, echo=pytest.fail)  # nothing to complain about
        ours = (bootstrapped.topic_prefix + ".", bootstrapped.topic_prefix + "-")
        for _ in range(50):  # the broker's metadata follows the controller's within moments
            left = set(admin.list_topics())
            if not any(t.startswith(ours) for t in left):
                break
            time.sleep(0.2)
        assert not [t for t in left if t.startswith(ours)]
        assert {other.topic(name) for name in topology.TOPICS} <= left
        with clients.elasticsearch(bootstrapped) as es:
            assert not es.indices.get(index=f"{bootstrapped.index_prefix}-*")
            assert es.indices.exists(index=other.index("docs"))
    finally:
        manager.remove_prefixed(other)
        admin.close()


def test_index_and_search_with_explicit_mappings(bootstrapped):
    index = bootstrapped.index("docs")
    with clients.elasticsearch(bootstrapped) as es:
        mapping = es.indices.get_mapping(index=index)[index]["mappings"]
        assert mapping["dynamic"] == "strict"
        assert mapping["properties"]["tickers"]["type"] == "keyword"
        assert mapping["properties"]["title"]["fields"]["keyword"]["type"] == "keyword"
        es.index(index=index, id="d1", document={"id": "d1", "title": "Apple beats", "tickers": ["AAPL"],
                                                 "published_at": "2026-11-28T12:00:00Z"}, refresh=True)
        hits = es.search(index=index, query={"term": {"tickers": "AAPL"}})["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["d1"]
        # an undeclared field is a mapping error, never a dynamic guess
        with pytest.raises(Exception, match="strict_dynamic_mapping_exception"):
            es.index(index=index, id="d2", document={"id": "d2", "mystery": 1})
        assert topology.ensure_indices(es, bootstrapped) == []  # idempotent


@pytest.fixture
def private_settings(services):
    """Settings for a second pair of servers on free ports with their own state folder (the
    state folder sits inside the clone, since /tmp/pytest-of-root is closed to the ES user)."""
    # Below the kernel's ephemeral range (tests.ports): a port from bind(0) was free when drawn, and a Kafka or
    # Elasticsearch client's connection could take it as its local port before the private server bound it.
    ports = free_ports(4)
    state = ROOT / ".finsent" / f"test-services-{uuid.uuid4().hex[:8]}"
    settings = services.model_copy(update={
        "state_dir": state, "kafka_port": ports[0], "kafka_controller_port": ports[1],
        "elasticsearch_port": ports[2], "elasticsearch_transport_port": ports[3],
        "kafka_bootstrap": f"127.0.0.1:{ports[0]}", "elasticsearch_url": f"http://127.0.0.1:{ports[2]}",
        "elasticsearch_heap": "384m", "kafka_heap": "256m",
    })
    yield settings
    manager.down(settings, echo=lambda m: None)
    shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
def test_up_status_down_cycle(private_settings):
    entries = manager.up(private_settings, echo=lambda m: None)
    assert all(e.healthy for e in entries)
    report = manager.status_json(private_settings)
    assert report["healthy"] is True
    assert report["kafka_bootstrap"] == private_settings.kafka_bootstrap
    assert report["elasticsearch_url"] == private_settings.elasticsearch_url
    pids = [e["pid"] for e in report["services"].values()]
    assert all(psutil.pid_exists(p) for p in pids)
    family = [psutil.Process(p) for p in pids]
    family += [c for p in family for c in p.children(recursive=True)]

    # The broker logs everything to its rolling file, and only warnings and worse to its stdout.
    from finsent.services.kafka_server import KafkaServer

    kafka = KafkaServer(private_settings)
    assert "Kafka Server started" in kafka.info_log_path.read_text()
    assert " INFO " not in kafka.log_path.read_text()

    # Security is on: the indices answer finsent's clients, and no one else, whatever Host a rebound page sends.
    url = private_settings.elasticsearch_url
    for headers in ({}, {"Host": "rebound.attacker.example"}):
        assert httpx.get(f"{url}/_cat/indices", headers=headers).status_code == 401
    password = local_credentials.read_password(private_settings.cache_dir, private_settings.elasticsearch_port)
    assert httpx.get(f"{url}/_cat/indices", auth=(local_credentials.USER, password)).status_code == 200
    with clients.elasticsearch(private_settings) as es:
        assert es.security.authenticate()["username"] == local_credentials.USER

    # idempotent: a second up starts nothing new
    again = manager.up(private_settings, echo=lambda m: None)
    assert [e.pid for e in again] == pids

    # An index the cluster refuses is an error, not reported as created. The cluster's shard limit is set here, on
    # these private servers, never on the shared ones other tests (in other processes) use at the same time.
    refused = private_settings.model_copy(update={"index_prefix": "refused"})
    with clients.elasticsearch(refused) as es:
        es.cluster.put_settings(persistent={"cluster.max_shards_per_node": es.cluster.health()["active_shards"]})
        with pytest.raises(Exception, match="shards"):
            topology.ensure_indices(es, refused)
        assert not es.indices.exists(index=refused.index("docs"))

    manager.down(private_settings, echo=lambda m: None)
    assert all(not p.is_running() or process_gone(p.pid) for p in family)
    assert manager.status_json(private_settings)["healthy"] is False
    # the shared servers were not touched
    assert manager.status_json(private_settings.model_copy(update={"state_dir": ROOT / ".finsent"}))


def test_port_taken_is_a_clear_error(private_settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", private_settings.kafka_port))
        sock.listen()
        with pytest.raises(ServiceError, match=f"port {private_settings.kafka_port}.*FINSENT_KAFKA_PORT"):
            manager.up(private_settings, echo=lambda m: None)


def test_wrong_java_is_a_clear_error(private_settings, tmp_path):
    broken = private_settings.model_copy(update={"elasticsearch_java_home": tmp_path})
    with pytest.raises(ServiceError, match="FINSENT_ELASTICSEARCH_JAVA_HOME"):
        manager.up(broken, echo=lambda m: None)
