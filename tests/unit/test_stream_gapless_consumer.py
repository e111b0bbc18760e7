"""The worker's consumer: its class and guarded topics, and no ack for a record no agent handled."""

from __future__ import annotations

from faust.types.tuples import ConsumerMessage

from finsent.settings import Settings
from stream.app import create_app
from stream.gapless_consumer import GaplessConsumer


def _message(topic: str, offset: int, *, tracked: bool) -> ConsumerMessage:
    message = ConsumerMessage(topic, 0, offset, 0.0, 0, [], b"AAPL", b"{}", None)
    message.tracked = tracked  # a stream tracks each record it hands to an agent
    return message


def test_the_worker_consumes_its_raw_and_window_topics_through_the_gapless_consumer():
    app = create_app(Settings(topic_prefix="unitgap"), scorer_loader=lambda ref: None)
    consumer = app.consumer  # built, not connected
    assert isinstance(consumer, GaplessConsumer)
    assert consumer.guarded_topics == {"unitgap.raw", "unitgap.stream-window-events"}


def test_a_record_skipped_by_a_stream_is_not_acked_and_a_handled_one_is():
    app = create_app(Settings(topic_prefix="unitgap"), scorer_loader=lambda ref: None)
    consumer = app.consumer
    app.topics._acking_topics.update({"unitgap.raw", "unitgap.changelog"})  # done by the agents at start

    # Message.ack is what a stream's event.ack() calls; it ends in the consumer's ack.
    assert _message("unitgap.raw", 5, tracked=False).ack(consumer) is False
    assert _message("unitgap.raw", 6, tracked=True).ack(consumer) is True
    assert list(consumer._acked[("unitgap.raw", 0)]) == [6]  # the commit cannot pass offset 5
    assert _message("unitgap.changelog", 9, tracked=False).ack(consumer) is True  # not guarded: as Faust does
