"""The stall report's view of aiokafka's own partition state, read from a real
aiokafka SubscriptionState (the private layout the report depends on)."""

import asyncio
from types import SimpleNamespace

from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition

from stream.consumer_view import client_partition_states


def test_paused_position_and_pending_reset_per_partition():
    async def scenario():
        subscription = SubscriptionState()
        seeked, paused, fresh = (TopicPartition("raw", p) for p in range(3))
        subscription.assign_from_user({seeked, paused, fresh})
        assignment = subscription.subscription.assignment
        assignment.state_value(seeked).seek(16)
        assignment.state_value(paused).seek(8)
        subscription.pause(paused)
        # Faust's consumer delegates to a thread object that owns the aiokafka client.
        client = SimpleNamespace(_subscription=subscription)
        consumer = SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: client))
        return client_partition_states(consumer, [seeked, paused, fresh, TopicPartition("raw", 9)])

    states = asyncio.run(scenario())
    assert states[str(TopicPartition("raw", 0))] == {"paused": False, "position": 16, "awaiting_reset": False}
    assert states[str(TopicPartition("raw", 1))] == {"paused": True, "position": 8, "awaiting_reset": False}
    assert states[str(TopicPartition("raw", 2))]["position"] is None
    assert "error" in states[str(TopicPartition("raw", 9))]  # not assigned: reported, not raised


def test_a_consumer_without_a_client_gives_an_error_entry():
    def not_started():
        raise RuntimeError("consumer not started")

    consumer = SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=not_started))
    assert client_partition_states(consumer, []) == {
        "error": "RuntimeError: consumer not started"}
