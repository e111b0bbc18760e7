"""Reading all a Kafka topic holds, for tests whose producers are done (a CLI that returned, a
publisher that flushed, a process that exited): up to each partition's end offset, so the read
ends with the last record instead of after a quiet time. A ``consumer_timeout_ms`` read waited
that time out on every call (3 s to 15 s), records or none."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition

from finsent import clients
from finsent.settings import Settings
from tests.waiting import wait_for


def read_to_end(consumer: Any, timeout: float = 30) -> list[Any]:
    """The records of the consumer's subscribed topics, up to their end offsets as they are when called.
    Fails after ``timeout`` seconds short of them (a group that never formed, a broker away)."""
    topics = sorted(consumer.subscription())
    ends = consumer.end_offsets([TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)])
    records: list[Any] = []

    def at_end() -> bool:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
        owned = consumer.assignment()
        return all(tp in owned and consumer.position(tp) >= end for tp, end in ends.items())

    wait_for(at_end, timeout, f"{', '.join(topics)} read up to its end offsets", every=0)
    return records


def topic_held(settings: Settings, name: str) -> list[Any]:
    """Every record the topic ``name`` (its short name: "control", "dlq") holds now, read to its end offsets."""
    consumer = clients.kafka_consumer(settings, settings.topic(name))
    try:
        return read_to_end(consumer)
    finally:
        consumer.close()
