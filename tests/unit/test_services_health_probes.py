"""The health probes are quiet and quick while nothing listens on a server's port.

`finsent services up` probes every second while Kafka and Elasticsearch start. The clients log
each refused connection (kafka-python at ERROR, elastic_transport with a traceback per retry),
which once put a screenful of them, and over a thousand lines, into the output of `make up`.
"""

import logging

import pytest

from finsent.services.elasticsearch_server import ElasticsearchServer
from finsent.services.kafka_server import KafkaServer
from finsent.settings import load_settings
from tests.ports import free_port


@pytest.mark.parametrize(("server_class", "port_variable", "client_loggers"), [
    (KafkaServer, "FINSENT_KAFKA_PORT", ("kafka",)),
    (ElasticsearchServer, "FINSENT_ELASTICSEARCH_PORT", ("elastic_transport", "elasticsearch", "urllib3")),
])
def test_probe_says_not_healthy_without_client_logs(server_class, port_variable, client_loggers, tmp_path,
                                                     monkeypatch, caplog):
    monkeypatch.setenv(port_variable, str(free_port()))
    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path))
    server = server_class(load_settings())

    with caplog.at_level(logging.DEBUG):
        healthy = server.health()

    assert not healthy
    assert [r.getMessage() for r in caplog.records if r.name.startswith(client_loggers)] == []
