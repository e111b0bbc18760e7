"""kafka-python's ``KafkaConsumer`` over an in-memory labels topic, as far as the label indexer uses it, for the tests
of ``finsent labels index --once``: a subscribed consumer has no partitions until its group formed (its first polls
are empty), then hands out at most ``max_records`` a poll; ``commit()`` commits the consumed positions. A clock the
polls move on stands in for the time a poll waits."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from finsent.schemas import LabelRecord


class Clock:
    """Seconds on a monotonic clock that only the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Stop(threading.Event):
    """The command's stop event, whose waits pass on ``clock`` rather than in real time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.advance(timeout or 0.0)
        return self.is_set()


def labels(count: int, labeled_at) -> list[bytes]:
    return [LabelRecord(text=f"Profit rose {n}", label="positive", labeled_at=labeled_at).to_json()
            for n in range(count)]


class LabelsTopic:
    def __init__(self, partitions: list[list[bytes]], *, topic: str = "finsent.labels", joining_polls: int = 0,
                 owned: set[int] | None = None, clock: Clock | None = None) -> None:
        self.values = {TopicPartition(topic, number): values for number, values in enumerate(partitions)}
        self.topic = topic
        self.joining_polls = joining_polls  # polls that return nothing while the group forms
        self.owned = owned  # the partitions the group gives this consumer (None: all); other members read the rest
        self.clock = clock or Clock()
        self.positions: dict[TopicPartition, int] = {}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.polls = 0
        self.away = False  # Kafka away: polls return nothing, offset requests time out
        self.commits_refused = 0  # the next commits that time out, Kafka there for the rest
        self.closed = False

    # --- what the tests arrange ------------------------------------------------------------------------------------

    def produce(self, partition: int, values: list[bytes]) -> None:
        self.values[TopicPartition(self.topic, partition)] += values

    def commit_as_another_member(self, partition: int, offset: int) -> None:
        self.committed_offsets[TopicPartition(self.topic, partition)] = offset

    @property
    def read_to(self) -> dict[int, int]:
        return {tp.partition: offset for tp, offset in sorted(self.committed_offsets.items())}

    # --- KafkaConsumer ---------------------------------------------------------------------------------------------

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.values if tp.topic == topic}

    def end_offsets(self, partitions, timeout_ms=None) -> dict[TopicPartition, int]:
        self._answer_or_time_out(timeout_ms)
        return {tp: len(self.values[tp]) for tp in partitions}

    def beginning_offsets(self, partitions, timeout_ms=None) -> dict[TopicPartition, int]:
        self._answer_or_time_out(timeout_ms)
        return {tp: 0 for tp in partitions}

    def committed(self, partition, metadata=False, timeout_ms=None) -> int | None:
        self._answer_or_time_out(timeout_ms)
        return self.committed_offsets.get(partition)

    def assignment(self) -> set[TopicPartition]:
        if self.polls <= self.joining_polls:
            return set()
        return {tp for tp in self.values if self.owned is None or tp.partition in self.owned}

    def poll(self, timeout_ms=0, max_records=None, update_offsets=True):
        self.polls += 1
        batch = {} if self.away else self._fetch(max_records or 500)
        if not batch:
            self.clock.advance(timeout_ms / 1000)
        return batch

    def commit(self, offsets=None, timeout_ms=None) -> None:
        if self.away or self.commits_refused:
            self.commits_refused = max(0, self.commits_refused - 1)
            raise KafkaTimeoutError("Timeout committing offsets")
        self.committed_offsets.update(self.positions)

    def seek(self, partition, offset) -> None:
        self.positions[partition] = offset

    def close(self) -> None:
        self.closed = True

    def _fetch(self, max_records: int) -> dict[TopicPartition, list[SimpleNamespace]]:
        batch: dict[TopicPartition, list[SimpleNamespace]] = {}
        for tp in sorted(self.assignment()):
            start = self.positions.setdefault(tp, self.committed_offsets.get(tp, 0))
            taken = self.values[tp][start:start + max_records - sum(map(len, batch.values()))]
            if taken:
                batch[tp] = [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=start + n, value=value)
                             for n, value in enumerate(taken)]
                self.positions[tp] = start + len(taken)
        return batch

    def _answer_or_time_out(self, timeout_ms) -> None:
        if self.away:
            self.clock.advance((timeout_ms or 30_000) / 1000)
            raise KafkaTimeoutError(f"Failed to get offsets by timestamps in {timeout_ms} ms")
