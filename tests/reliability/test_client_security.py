"""TLS and credentials for real clusters: the client arguments built from the settings (pure).

Every part connects through ``finsent.clients`` (kafka-python, elasticsearch) or the worker's
Faust credentials, so these arguments are what a SASL_SSL Kafka or a secured Elasticsearch
sees. Also: secrets never show in the settings' repr or in a configuration error.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from finsent import clients
from finsent.settings import Settings, SettingsError, load_settings

CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def make(**values) -> Settings:
    return Settings(**values)


def test_plaintext_kafka_has_no_credentials():
    kwargs = clients.kafka_common(make(kafka_bootstrap="k1:9092,k2:9092"))
    assert kwargs == {"bootstrap_servers": ["k1:9092", "k2:9092"], "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_with_ca_file():
    settings = make(kafka_bootstrap="broker.example:9096", kafka_security_protocol="SASL_SSL",
                    kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="finsent",
                    kafka_sasl_password=SecretStr("kafka-pw"), kafka_ssl_cafile=Path("/etc/finsent/ca.pem"))
    kwargs = clients.kafka_common(settings)
    assert kwargs == {
        "bootstrap_servers": ["broker.example:9096"], "security_protocol": "SASL_SSL",
        "ssl_cafile": "/etc/finsent/ca.pem", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "finsent", "sasl_plain_password": "kafka-pw",
    }
    # Producers, consumers and admin clients all start from these arguments, and the pinned kafka-python knows each
    # (it refuses an unknown one at construction: status called a user's Kafka down over api_version_auto_timeout_ms,
    # which kafka-python 3 no longer has).
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    from finsent.system import STATUS_KAFKA_ADMIN

    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(kwargs) <= set(client.DEFAULT_CONFIG), client.__name__
    assert set(STATUS_KAFKA_ADMIN) <= set(KafkaAdminClient.DEFAULT_CONFIG)  # what status adds for a user's cluster


def test_ssl_only_kafka_passes_the_ca_file():
    kwargs = clients.kafka_common(make(kafka_security_protocol="SSL", kafka_ssl_cafile=Path("/ca.pem")))
    assert kwargs["security_protocol"] == "SSL" and kwargs["ssl_cafile"] == "/ca.pem"
    assert "sasl_mechanism" not in kwargs


def test_control_listener_gets_the_same_credentials():
    # The worker's control listener is an aiokafka consumer: TLS as an SSL context built from the CA file.
    plain = clients.aiokafka_common(make(kafka_bootstrap="k1:9092,k2:9092"))
    assert plain == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}
    kwargs = clients.aiokafka_common(make(kafka_bootstrap="b1:9096", kafka_security_protocol="SASL_SSL",
                                          kafka_sasl_mechanism="SCRAM-SHA-512",
                                          kafka_sasl_username="finsent", kafka_sasl_password=SecretStr("kafka-pw"),
                                          kafka_ssl_cafile=CA))
    assert isinstance(kwargs.pop("ssl_context"), ssl.SSLContext)
    assert kwargs == {"bootstrap_servers": "b1:9096", "security_protocol": "SASL_SSL",
                      "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "finsent",
                      "sasl_plain_password": "kafka-pw"}
    from aiokafka import AIOKafkaConsumer

    async def build() -> None:  # aiokafka builds its clients inside a running loop only
        AIOKafkaConsumer(**kwargs, ssl_context=ssl.create_default_context())  # takes every argument

    asyncio.run(build())


def test_faust_worker_gets_the_same_credentials():
    from stream.app import _broker_credentials

    assert _broker_credentials(make()) is None
    sasl = _broker_credentials(make(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                                    kafka_sasl_username="u", kafka_sasl_password=SecretStr("p"),
                                    kafka_ssl_cafile=CA))
    assert (sasl.username, sasl.password, sasl.mechanism.value) == ("u", "p", "PLAIN")
    assert sasl.protocol.value == "SASL_SSL" and isinstance(sasl.ssl_context, ssl.SSLContext)
    plain = _broker_credentials(make(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                                     kafka_sasl_username="u", kafka_sasl_password=SecretStr("p")))
    assert plain.protocol.value == "SASL_PLAINTEXT" and plain.ssl_context is None
    tls = _broker_credentials(make(kafka_security_protocol="SSL", kafka_ssl_cafile=CA))
    assert tls.protocol.value == "SSL" and isinstance(tls.context, ssl.SSLContext)


def test_elasticsearch_api_key_wins_over_basic_auth():
    kwargs = clients.elasticsearch_kwargs(make(
        elasticsearch_url="https://es.example:9243", elasticsearch_api_key=SecretStr("a2V5"),
        elasticsearch_username="elastic", elasticsearch_password=SecretStr("es-pw"),
        elasticsearch_ca_certs=Path("/etc/finsent/es-ca.pem")))
    assert kwargs == {"hosts": ["https://es.example:9243"], "request_timeout": 30, "api_key": "a2V5",
                      "verify_certs": True, "ca_certs": "/etc/finsent/es-ca.pem"}


def test_elasticsearch_basic_auth_and_unverified_tls():
    kwargs = clients.elasticsearch_kwargs(make(
        elasticsearch_url="https://es.example:9200", elasticsearch_username="elastic",
        elasticsearch_password=SecretStr("es-pw"), elasticsearch_verify_certs=False))
    assert kwargs["basic_auth"] == ("elastic", "es-pw") and kwargs["verify_certs"] is False
    assert "api_key" not in kwargs and "ca_certs" not in kwargs


def test_plain_http_elasticsearch_has_no_tls_arguments():
    kwargs = clients.elasticsearch_kwargs(make(elasticsearch_ca_certs=Path("/ca.pem")))
    kwargs.pop("basic_auth", None)  # the local server's own password, where `finsent services up` ran here
    assert kwargs == {"hosts": ["http://127.0.0.1:9200"], "request_timeout": 30}


def test_the_clients_accept_these_arguments():
    """The arguments are real constructor arguments of the installed libraries (no connection made)."""
    from elasticsearch import Elasticsearch

    es = Elasticsearch(**clients.elasticsearch_kwargs(make(
        elasticsearch_url="https://es.example:9243", elasticsearch_api_key=SecretStr("a2V5"),
        elasticsearch_ca_certs=CA)))
    es.close()
    from kafka import KafkaProducer

    config_keys = set(KafkaProducer.DEFAULT_CONFIG)
    kwargs = clients.kafka_common(make(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
                                       kafka_sasl_username="u", kafka_sasl_password=SecretStr("p"),
                                       kafka_ssl_cafile=CA))
    assert set(kwargs) <= config_keys


SECRETS = {
    "kafka_sasl_password": "kafka-secret-1", "elasticsearch_password": "es-secret-2",
    "elasticsearch_api_key": "es-key-3", "push_token": "push-secret-4", "alerts_webhook_secret": "hook-secret-5",
    "label_token": "label-secret-6", "kibana_password": "kibana-secret-7", "kibana_api_key": "kibana-key-8",
}


def test_secrets_are_secret_fields_and_never_in_repr():
    from finsent.settings import _SECRET_FIELDS

    settings = make(**{k: SecretStr(v) for k, v in SECRETS.items()})
    shown = repr(settings) + str(settings) + str(settings.model_dump())
    assert not [v for v in SECRETS.values() if v in shown]
    assert set(SECRETS) <= _SECRET_FIELDS
    secret_typed = {name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
    assert secret_typed == _SECRET_FIELDS


def test_a_configuration_error_does_not_echo_a_secret(monkeypatch):
    monkeypatch.setenv("FINSENT_PUSH_TOKEN", "push-secret-4")
    monkeypatch.setenv("FINSENT_LOG_LEVEL", "LOUD")  # invalid: the error lists the variables
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "FINSENT_LOG_LEVEL" in str(caught.value) and "push-secret-4" not in str(caught.value)


def test_token_comparisons_are_constant_time():
    """The push and labels endpoints compare tokens with hmac.compare_digest, never ==."""
    import inspect

    import finsent.http_requests
    import ingest.push_tokens
    import retrain.label_tokens

    for source in (inspect.getsource(ingest.push_tokens.PushAuth.sender),
                   inspect.getsource(retrain.label_tokens.LabelAuth.caller)):
        assert "bearer_matches(" in source
        assert "== token" not in source and "token ==" not in source
    assert "hmac.compare_digest(" in inspect.getsource(finsent.http_requests.bearer_matches)
