"""Kafka and Elasticsearch clients built from the settings (TLS and credentials included).

The only place that turns connection settings into client arguments, so every part talks
to a real cluster the same way it talks to the local one.
"""

from __future__ import annotations

import logging
from typing import Any

from finsent.services import local_credentials
from finsent.settings import Settings

log = logging.getLogger(__name__)

# A consumer group's leader rebalances when the metadata shows new partitions of a subscribed
# topic, but the client refreshes it only this often. The clients' 5 minutes left partitions
# added by an operator, or a topic created just before the group formed and not yet in the
# broker's metadata, unconsumed for minutes. A refresh is one small request.
METADATA_MAX_AGE_MS = 10_000


def error_text(exc: BaseException) -> str:
    """``Type: message`` of a client's error, once: kafka-python's errors already begin with their type's name
    ("KafkaTimeoutError: KafkaTimeoutError: …" otherwise)."""
    text, kind = str(exc), type(exc).__name__
    return text if text.startswith(kind) else f"{kind}: {text}"


def kafka_common(settings: Settings) -> dict[str, Any]:
    """Connection arguments shared by kafka-python producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_ssl_cafile:
        kwargs["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return kwargs | _kafka_sasl(settings)


def aiokafka_common(settings: Settings) -> dict[str, Any]:
    """The same for aiokafka (the worker's control listener), which takes TLS as an SSL context."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    return kwargs | _kafka_sasl(settings)


def _kafka_sasl(settings: Settings) -> dict[str, Any]:
    if not settings.kafka_sasl_mechanism:
        return {}
    kwargs = {"sasl_mechanism": settings.kafka_sasl_mechanism, "sasl_plain_username": settings.kafka_sasl_username}
    if settings.kafka_sasl_password is not None:
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def kafka_producer(settings: Settings, **overrides: Any):
    """A durable producer: acks=all, idempotent, retried; callers own flush() and close()."""
    from kafka import KafkaProducer

    kwargs = kafka_common(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "compression_type": None,
        "request_timeout_ms": 30_000,
        "delivery_timeout_ms": 120_000,
    }
    kwargs.update(overrides)
    return KafkaProducer(**kwargs)


def kafka_consumer(settings: Settings, *topics: str, **overrides: Any):
    """A consumer subscribed to `topics` (none: the caller assigns), with their partitions already known."""
    from kafka import KafkaConsumer

    kwargs = kafka_common(settings) | {"auto_offset_reset": "earliest", "enable_auto_commit": False,
                                       "metadata_max_age_ms": METADATA_MAX_AGE_MS}
    kwargs.update(overrides)
    consumer = KafkaConsumer(**kwargs)
    if topics:
        _learn_partitions(consumer, topics)
        consumer.subscribe(list(topics))
    return consumer


def _learn_partitions(consumer: Any, topics: tuple[str, ...]) -> None:
    """Fetch the topics' metadata before the group forms.

    A consumer that subscribes at once joins its group before its first metadata answer: the
    leader assigns nothing, logs "No partition metadata for topic …", and the group rejoins.
    The fetch is bounded by the request timeout; if it fails the group forms the slow way."""
    from kafka.errors import KafkaError

    try:
        for topic in topics:
            consumer.partitions_for_topic(topic)
    except KafkaError as exc:
        log.info("no metadata for %s before subscribing (%s); the group will rejoin once it arrives", topics, exc)


def kafka_admin(settings: Settings, **overrides: Any):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**(kafka_common(settings) | {"request_timeout_ms": 15_000} | overrides))


def elasticsearch_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"hosts": [settings.elasticsearch_url], "request_timeout": 30}
    if settings.elasticsearch_api_key is not None:
        kwargs["api_key"] = settings.elasticsearch_api_key.get_secret_value()
    elif settings.elasticsearch_username:
        password = settings.elasticsearch_password.get_secret_value() if settings.elasticsearch_password else ""
        kwargs["basic_auth"] = (settings.elasticsearch_username, password)
    elif local_credentials.is_loopback_http(settings.elasticsearch_url) and (
            password := local_credentials.read_password(settings.cache_dir, settings.elasticsearch_port)):
        kwargs["basic_auth"] = (local_credentials.USER, password)  # the local server of `finsent services up`
    if settings.elasticsearch_url.startswith("https://"):
        kwargs["verify_certs"] = settings.elasticsearch_verify_certs
        if settings.elasticsearch_ca_certs:
            kwargs["ca_certs"] = str(settings.elasticsearch_ca_certs)
    return kwargs


def elasticsearch(settings: Settings, **overrides: Any):
    from elasticsearch import Elasticsearch

    return Elasticsearch(**(elasticsearch_kwargs(settings) | overrides))


def async_elasticsearch(settings: Settings, **overrides: Any):
    from elasticsearch import AsyncElasticsearch

    return AsyncElasticsearch(**(elasticsearch_kwargs(settings) | overrides))
