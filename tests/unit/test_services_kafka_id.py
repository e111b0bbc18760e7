"""The Kafka cluster id must be something the storage tool's argument parser accepts."""

import uuid

from finsent.services import kafka_server


def test_cluster_id_never_starts_with_a_dash(monkeypatch):
    # 0xF8 as the first byte encodes to "-" in base64url: the id the storage tool once refused.
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    draws = iter([dashed, dashed, plain])
    monkeypatch.setattr(kafka_server.uuid, "uuid4", lambda: next(draws))

    cluster_id = kafka_server._kafka_uuid()

    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22
    assert next(draws, None) is None  # both dashed draws were rejected


def test_cluster_ids_are_random_base64url():
    ids = {kafka_server._kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
