"""The local servers' ports and the clients' addresses move together, and settings that validate
but would only fail when a server starts are refused up front."""

from __future__ import annotations

import pytest

from finsent.settings import SettingsError, load_settings
from finsent.system import _uses_embedded_services


def test_a_moved_local_server_moves_its_clients(monkeypatch):
    # The "port taken" error tells the user to set these; the clients must follow.
    monkeypatch.setenv("FINSENT_KAFKA_PORT", "19092")
    monkeypatch.setenv("FINSENT_ELASTICSEARCH_PORT", "19200")
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.elasticsearch_url == "http://127.0.0.1:19200"
    assert _uses_embedded_services(settings)


def test_an_address_the_user_names_wins(monkeypatch):
    monkeypatch.setenv("FINSENT_KAFKA_PORT", "19092")
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", "broker1:9093")
    settings = load_settings()
    assert settings.kafka_bootstrap == "broker1:9093"
    assert not _uses_embedded_services(settings)


def test_two_local_servers_on_one_port_are_refused(monkeypatch):
    monkeypatch.setenv("FINSENT_KAFKA_CONTROLLER_PORT", "9200")
    with pytest.raises(SettingsError,
                       match="FINSENT_KAFKA_CONTROLLER_PORT and FINSENT_ELASTICSEARCH_PORT are both 9200"):
        load_settings()


@pytest.mark.parametrize("prefix", ["_x", "-x", "+x"])
def test_an_index_prefix_elasticsearch_refuses_is_refused(monkeypatch, prefix):
    monkeypatch.setenv("FINSENT_INDEX_PREFIX", prefix)
    with pytest.raises(SettingsError, match="FINSENT_INDEX_PREFIX"):
        load_settings()
