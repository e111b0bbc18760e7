"""`finsent up` names a port another process holds, or two of its own processes are set to share, before it starts
anything (tests/integration/test_system.py
runs the whole system)."""

from __future__ import annotations

import socket

import pytest

from finsent import system
from finsent.services.process import ServiceError
from finsent.settings import Settings


def test_up_names_a_taken_port_and_its_setting_before_it_starts_anything(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        # The user's own cluster (nothing listens there): had the check passed, `up` would fail on it instead.
        settings = Settings(state_dir=tmp_path / "state", push_port=port, kafka_bootstrap="127.0.0.1:1",
                            elasticsearch_url="http://127.0.0.1:1")
        with pytest.raises(ServiceError, match=f"port {port} for push is taken by another process; stop it or "
                                               "set FINSENT_PUSH_PORT"):
            system.up(settings, echo=lambda m: None)
    assert not (tmp_path / "state" / "processes").exists()  # no process was started
    push = next(spec for spec in system.process_specs(settings) if spec.name == "push")
    assert push.args == ("ingest", "serve", "--port", str(port)) and push.url == f"http://127.0.0.1:{port}/"
    assert system.taken_ports(settings, [push]) == []  # free again


def test_up_refuses_two_of_its_processes_on_one_port_before_it_starts_anything(tmp_path):
    settings = Settings(state_dir=tmp_path / "state", push_port=8099, receiver_port=8099)
    with pytest.raises(ServiceError, match="FINSENT_RECEIVER_PORT and FINSENT_PUSH_PORT are both 8099: each needs a "
                                           "port of its own"):
        system.up(settings, echo=lambda m: None)
    assert not (tmp_path / "state" / "processes").exists()
    # The local Kafka counts too, while `up` runs it; against the user's own cluster it does not.
    settings = Settings(state_dir=tmp_path / "state", dashboard_port=9092, worker_web_port=9092)
    assert system.shared_ports(settings, system.process_specs(settings)) == [
        "FINSENT_WORKER_WEB_PORT, FINSENT_DASHBOARD_PORT and FINSENT_KAFKA_PORT are all 9092: each needs a port of "
        "its own"]
    own_cluster = settings.model_copy(update={"kafka_bootstrap": "kafka.example.com:9092"})
    assert len(system.shared_ports(own_cluster, system.process_specs(own_cluster))) == 1


def test_services_up_checks_every_servers_ports_before_it_starts_one(tmp_path, monkeypatch):
    from finsent.services import manager
    from finsent.services.kafka_server import KafkaServer
    from tests.ports import free_port

    started = []
    monkeypatch.setattr(KafkaServer, "start", lambda self: started.append(self.name))  # only reached by the bug
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        settings = Settings(state_dir=tmp_path / "state", kafka_port=free_port(), kafka_controller_port=free_port(),
                            elasticsearch_port=free_port(), elasticsearch_transport_port=port)
        with pytest.raises(ServiceError, match=f"port {port} for elasticsearch is taken by another process; stop it "
                                               "or set FINSENT_ELASTICSEARCH_TRANSPORT_PORT"):
            manager.up(settings, echo=lambda m: None)
    assert started == []  # Kafka was not started ahead of the check that failed
