"""``finsent labels index --once`` reads to the end its topic had at the start, and says when it could not.

Before, it stopped after two empty polls in a row or 60 s, and exited 0 either way: a group still forming (a broker's
first polls after a join are empty; 3 s of `group.initial.rebalance.delay.ms` by default) made it read nothing of a
full topic, a backlog longer than 60 s was read in part, and Kafka away read as an empty topic: "read N record(s)",
exit 0, no word that the topic was not drained. Kafka is :mod:`tests.unit.labels_topic_fake` (kafka-python's consumer
over an in-memory topic), Elasticsearch a stand-in for the bulk write; time passes on a test clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from typer.testing import CliRunner

from finsent.cli import app
from finsent.settings import Settings
from retrain.drain_progress import DrainProgress, DrainTarget
from retrain.label_indexer import LabelIndexer
from retrain.label_store import IndexReport
from tests.unit.labels_topic_fake import Clock, LabelsTopic, Stop, labels
from tests.unit.test_one_shot_stops import Producer

LABELED_AT = datetime(2025, 3, 1, tzinfo=UTC)
TOPIC = "finsent.labels"
P0, P1, P2 = (TopicPartition(TOPIC, n) for n in range(3))


# --- where a drain ends, and when it gives up ------------------------------------------------------------------------

def test_records_left_run_from_the_groups_commit_or_the_first_offset_to_the_end_at_the_start():
    target = DrainTarget(ends={P0: 100, P1: 50, P2: 40}, beginnings={P0: 0, P1: 20, P2: 40})
    assert target.left({}) == 100 + 30  # never committed: from the first offset (P2's records all expired)
    assert target.left({P0: 60, P1: 10, P2: None}) == 40 + 30  # P1 committed before records retention removed
    assert target.left({P0: 130, P1: 50}) == 0  # P0 read past its end: records produced since the start


def test_a_drain_stalls_once_the_records_left_stop_falling_for_the_stall_seconds():
    clock = Clock()
    progress = DrainProgress(30.0, clock)
    clock.advance(20)
    progress.saw(100)  # learning the end is no progress: the clock runs from the start
    clock.advance(9)
    assert not progress.stalled() and progress.seconds_left() == pytest.approx(1.0)
    progress.saw(60)
    clock.advance(29)
    progress.failed("ConnectionError: refused")
    progress.saw(60)  # Kafka answers, nothing moved: the failure (Elasticsearch's) is still the reason
    assert not progress.stalled() and progress.error == "ConnectionError: refused"
    progress.read(0)  # a poll went through: it passed
    assert progress.error is None
    progress.failed("ConnectionError: refused")
    clock.advance(1)
    assert progress.stalled()
    assert progress.drained() == (0, 60, 100, "ConnectionError: refused")
    assert not progress.drained().to_the_end


# --- the indexer's drain ----------------------------------------------------------------------------------------

class Elasticsearch:
    """The bulk write of the labels: refused while ``away``; ``seconds`` pass on the clock for each."""

    def __init__(self, clock: Clock, seconds: float = 0.0) -> None:
        self.clock, self.seconds = clock, seconds
        self.indexed = 0
        self.away = False

    def __call__(self, es, settings, records, **kwargs) -> IndexReport:
        self.clock.advance(self.seconds)
        if self.away:
            raise ConnectionError("Connection refused")
        self.indexed += len(records)
        return IndexReport(indexed=len(records))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def es(clock, monkeypatch) -> Elasticsearch:
    from finsent import clients

    stand_in = Elasticsearch(clock)
    monkeypatch.setattr(clients, "kafka_producer", lambda settings, **kwargs: Producer())
    monkeypatch.setattr(clients, "elasticsearch", lambda settings: SimpleNamespace(close=lambda: None))
    monkeypatch.setattr("finsent.topology.update_mapping", lambda es, settings, name: None)
    monkeypatch.setattr("retrain.label_indexer.index_labels", stand_in)
    return stand_in


def drain(topic: LabelsTopic, monkeypatch, stop: Stop | None = None, stall_s: float = 120.0):
    from finsent import clients

    monkeypatch.setattr(clients, "kafka_consumer", lambda settings, *topics, **kwargs: topic)
    with LabelIndexer(Settings(), refresh=True) as indexer:
        return indexer.drain(stop or Stop(topic.clock), stall_s=stall_s, clock=topic.clock)


def test_a_group_slow_to_hand_out_partitions_is_waited_for(clock, es, monkeypatch):
    topic = LabelsTopic([labels(300, LABELED_AT) for _ in range(4)], joining_polls=3, clock=clock)
    drained = drain(topic, monkeypatch)
    assert drained == (1200, 0, 1200, None) and drained.to_the_end  # it read nothing before
    assert es.indexed == 1200 and topic.read_to == {0: 300, 1: 300, 2: 300, 3: 300}


def test_a_backlog_of_many_polls_and_minutes_is_read_to_the_end(clock, es, monkeypatch):
    es.seconds = 2.0  # 40 batches of 500: 80 s, past the 60 s it stopped at
    topic = LabelsTopic([labels(5000, LABELED_AT) for _ in range(4)], clock=clock)
    drained = drain(topic, monkeypatch)
    assert drained.to_the_end and drained.records == es.indexed == 20_000 and clock() >= 80


def test_records_produced_after_the_start_are_not_waited_for(clock, es, monkeypatch):
    topic = LabelsTopic([labels(600, LABELED_AT)], clock=clock)
    es_write = es.__call__

    def producing(*args, **kwargs):
        topic.produce(0, labels(500, LABELED_AT))  # a producer as fast as the indexer: it would never end
        return es_write(*args, **kwargs)

    monkeypatch.setattr("retrain.label_indexer.index_labels", producing)
    drained = drain(topic, monkeypatch)
    assert drained.to_the_end and drained.records == 1000  # two polls: past the 600 of the start


def test_a_group_already_at_the_end_is_not_joined(clock, es, monkeypatch):
    topic = LabelsTopic([labels(30, LABELED_AT)], clock=clock)
    topic.commit_as_another_member(0, 30)
    assert drain(topic, monkeypatch) == (0, 0, 0, None) and topic.polls == 0


def test_partitions_another_member_of_the_group_reads_end_when_it_committed_them(clock, es, monkeypatch):
    topic = LabelsTopic([labels(700, LABELED_AT), labels(400, LABELED_AT)], owned={0}, clock=clock)
    assert drain(topic, monkeypatch, stall_s=30) == (700, 400, 1100, None)  # nobody read partition 1: it stalls

    topic = LabelsTopic([labels(700, LABELED_AT), labels(400, LABELED_AT)], owned={0}, clock=clock)
    polled = topic.poll

    def the_other_member_reads_meanwhile(*args, **kwargs):
        if topic.polls == 5:
            topic.commit_as_another_member(1, 400)
        return polled(*args, **kwargs)

    topic.poll = the_other_member_reads_meanwhile
    assert drain(topic, monkeypatch, stall_s=30) == (700, 0, 1100, None)


def test_elasticsearch_away_for_a_while_is_waited_for_and_the_batch_read_again(clock, es, monkeypatch):
    topic = LabelsTopic([labels(1200, LABELED_AT)], clock=clock)
    es_write = es.__call__
    calls = []

    def away_for_the_second_batch_three_times(*args, **kwargs):
        calls.append(1)
        es.away = 2 <= len(calls) <= 4
        return es_write(*args, **kwargs)

    monkeypatch.setattr("retrain.label_indexer.index_labels", away_for_the_second_batch_three_times)
    drained = drain(topic, monkeypatch)
    assert drained == (1200, 0, 1200, None) and es.indexed == 1200 and topic.read_to == {0: 1200}
    assert clock() == 1 + 2 + 4  # its backoff


def test_a_commit_kafka_did_not_take_is_made_again(clock, es, monkeypatch):
    topic = LabelsTopic([labels(800, LABELED_AT)], clock=clock)
    topic_poll = topic.poll

    def refused_on_the_last_batch(*args, **kwargs):
        topic.commits_refused = int(topic.polls == 1)  # the second poll's commit times out
        return topic_poll(*args, **kwargs)

    topic.poll = refused_on_the_last_batch
    drained = drain(topic, monkeypatch)
    # Its records were read on: without the batch read again, it waited in vain for a commit of offset 800.
    assert drained.to_the_end and topic.read_to == {0: 800} and es.indexed == 500 + 300 + 300


def test_elasticsearch_away_past_the_stall_seconds_ends_it_with_how_far_it_got(clock, es, monkeypatch):
    topic = LabelsTopic([labels(1200, LABELED_AT)], clock=clock)
    es_write = es.__call__

    def away_after_the_first_batch(*args, **kwargs):
        es.away = es.indexed > 0
        return es_write(*args, **kwargs)

    monkeypatch.setattr("retrain.label_indexer.index_labels", away_after_the_first_batch)
    drained = drain(topic, monkeypatch, stall_s=60)
    assert drained == (500, 700, 1200, "ConnectionError: Connection refused")
    assert topic.read_to == {0: 500} and 60 <= clock() < 75


def test_kafka_away_ends_it_with_how_far_it_got(clock, es, monkeypatch):
    topic = LabelsTopic([labels(1200, LABELED_AT)], clock=clock)
    polled = topic.poll

    def away_after_the_first_batch(*args, **kwargs):
        topic.away = topic.polls >= 1
        return polled(*args, **kwargs)

    topic.poll = away_after_the_first_batch
    drained = drain(topic, monkeypatch, stall_s=60)
    assert drained.records == 500 and drained.left == 700 and drained.error.startswith("KafkaTimeoutError: ")


def test_a_stop_ends_it_after_the_batch_under_way(clock, es, monkeypatch):
    topic = LabelsTopic([labels(1200, LABELED_AT)], clock=clock)
    stop = Stop(clock)
    es_write = es.__call__

    def stopped_during_the_second(*args, **kwargs):
        if es.indexed:
            stop.set()
        return es_write(*args, **kwargs)

    monkeypatch.setattr("retrain.label_indexer.index_labels", stopped_during_the_second)
    drained = drain(topic, monkeypatch, stop=stop)
    assert drained.records == 1000 and not drained.to_the_end and topic.read_to == {0: 1000}


# --- the command ---------------------------------------------------------------------------------------------------

@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    # Real seconds here: the command keeps its own clock.
    return {"FINSENT_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200", "FINSENT_LABELS_DRAIN_STALL_S": "0.5"}


def index_once(topic: LabelsTopic, env, monkeypatch):
    from finsent import clients

    monkeypatch.setattr(clients, "kafka_consumer", lambda settings, *topics, **kwargs: topic)
    return CliRunner().invoke(app, ["labels", "index", "--once"], env=env)


def test_index_once_reads_a_topic_whose_group_forms_slowly_to_the_end(env, es, monkeypatch):
    result = index_once(LabelsTopic([labels(300, LABELED_AT) for _ in range(4)], joining_polls=3), env, monkeypatch)
    assert result.exit_code == 0, result.output
    assert result.stdout == "read 1200 record(s): 1200 indexed, 0 to the DLQ\n"  # "read 0 record(s)" before


def test_index_once_with_kafka_gone_away_exits_1_with_how_far_it_got(env, es, monkeypatch):
    topic = LabelsTopic([labels(1200, LABELED_AT)])
    polled = topic.poll

    def away_after_the_first_batch(*args, **kwargs):
        topic.away = topic.polls >= 1
        return polled(*args, **kwargs)

    topic.poll = away_after_the_first_batch
    result = index_once(topic, env, monkeypatch)
    assert result.exit_code == 1, result.output  # 0 before, as for a drained topic
    assert result.stdout == "read 500 record(s): 500 indexed, 0 to the DLQ\n"
    assert result.stderr.splitlines()[-1] == (
        "finsent: finsent.labels was not drained: 700 of its 1200 unread record(s) left after 0.5 s without progress "
        "(KafkaTimeoutError: Failed to get offsets by timestamps in 10000 ms); what was read is indexed and committed: "
        "run it again to go on from there")


def test_index_once_with_elasticsearch_away_exits_1_with_how_far_it_got(env, es, monkeypatch):
    es.away = True
    result = index_once(LabelsTopic([labels(1200, LABELED_AT)]), env, monkeypatch)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        "finsent: finsent.labels was not drained: 1200 of its 1200 unread record(s) left after 0.5 s without progress "
        "(ConnectionError: Connection refused); what was read is indexed and committed: run it again to go on from "
        "there")


def test_index_once_whose_group_gives_it_none_of_the_partitions_left_says_so(env, es, monkeypatch):
    # Another indexer of the group holds partition 1 and commits nothing (Elasticsearch away for it, say).
    result = index_once(LabelsTopic([labels(100, LABELED_AT), labels(40, LABELED_AT)], owned={0}), env, monkeypatch)
    assert result.exit_code == 1, result.output
    assert result.stdout == "read 100 record(s): 100 indexed, 0 to the DLQ\n"
    assert result.stderr.splitlines()[-1] == (
        "finsent: finsent.labels was not drained: 40 of its 140 unread record(s) left after 0.5 s without progress (no "
        "record came: the consumer group gave this run none of the partitions left); what was read is indexed and "
        "committed: run it again to go on from there")
