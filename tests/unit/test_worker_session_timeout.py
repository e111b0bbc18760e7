"""FINSENT_WORKER_SESSION_TIMEOUT: how long Kafka waits for a silent worker before its partitions
go to the others (the kill -9 tests set it low so that their second worker need not wait a minute)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from finsent.settings import Settings


def test_the_worker_s_kafka_session_follows_the_setting():
    from stream.app import create_app

    default = create_app(Settings()).conf
    assert (default.broker_session_timeout, default.broker_heartbeat_interval) == (60.0, 3.0)
    short = create_app(Settings(worker_session_timeout=7.5)).conf
    assert (short.broker_session_timeout, short.broker_heartbeat_interval) == (7.5, 2.5)  # 3 heartbeats a session


@pytest.mark.parametrize("seconds", [5, 91])
def test_a_session_timeout_kafka_or_faust_would_refuse_is_refused_at_start(seconds):
    with pytest.raises(ValidationError, match="worker_session_timeout"):
        Settings(worker_session_timeout=seconds)
