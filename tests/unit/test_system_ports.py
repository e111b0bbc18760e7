"""`finsent up` names a port another process holds before it starts anything (tests/integration/test_system.py
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
