"""The Kafka health probe is quiet and quick while nothing listens on the broker's port."""

import logging
import socket

from finsent.services.kafka_server import KafkaServer
from finsent.settings import load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_is_false_without_kafka_client_errors(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FINSENT_KAFKA_PORT", str(_free_port()))
    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path))
    server = KafkaServer(load_settings())

    with caplog.at_level(logging.DEBUG):
        healthy = server.health()

    assert healthy is False
    # kafka-python logs each refused bootstrap at ERROR; the probe must not reach it.
    assert [r for r in caplog.records if r.name.startswith("kafka")] == []
