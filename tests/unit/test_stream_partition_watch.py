"""The worker's periodic look at its partitions: the lag it reports, and that a failing broker call never
escapes the timer (Faust would crash the worker)."""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

from aiokafka.errors import IllegalStateError, KafkaTimeoutError
from prometheus_client import CollectorRegistry

from finsent.settings import Settings
from stream.partition_watch import PartitionWatch
from stream.runtime import WorkerRuntime

TP = namedtuple("TP", "topic partition")
RAW, WINDOWS = "unitwatch.raw", "unitwatch.stream-window-events"


class Consumer:
    """Faust's consumer as the watch reads it: its assignment, Faust's committed offsets, the log ends."""

    def __init__(self, ends: dict, committed: dict) -> None:
        self.ends, self._committed_offset = ends, committed
        self.highwaters_error: Exception | None = None
        self.revoked: set = set()
        self.sought: list = []
        self._read_offset, self._paused_partitions, self.flow_active, self.unacked = {}, set(), True, set()
        self.contiguity = SimpleNamespace(expected=lambda tp: None)

    def assignment(self):
        return set(self.ends)

    async def highwaters(self, *tps):
        if self.highwaters_error:
            raise self.highwaters_error
        return {tp: self.ends[tp] for tp in tps}

    def resume_partitions(self, tps):
        pass

    async def perform_seek(self):
        self.sought.append("committed")

    async def seek(self, tp, offset):
        if tp in self.revoked:
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.sought.append((tp, offset))


def _watch(consumer: Consumer) -> tuple[PartitionWatch, WorkerRuntime, list]:
    runtime = WorkerRuntime(Settings(topic_prefix="unitwatch", worker_stall_after=60), lambda ref: None, "champion",
                            CollectorRegistry())
    now = [0.0]
    app = SimpleNamespace(consumer=consumer, rebalancing=False, in_recovery=False)
    return PartitionWatch(app, runtime, RAW, WINDOWS, clock=lambda: now[0]), runtime, now


def _lag(runtime: WorkerRuntime, partition: int) -> float | None:
    return runtime.metrics.registry.get_sample_value("finsent_stream_consumer_lag", {"partition": str(partition)})


async def test_lag_is_what_the_group_has_not_committed_and_grows_while_nothing_is_delivered():
    consumer = Consumer({TP(RAW, 0): 100, TP(RAW, 1): 50, TP(WINDOWS, 0): 10},
                        {TP(RAW, 0): 40, TP(RAW, 1): None, TP(WINDOWS, 0): 10})
    watch, runtime, _ = _watch(consumer)
    await watch.tick()
    assert (_lag(runtime, 0), _lag(runtime, 1)) == (60, 50)
    consumer.ends[TP(RAW, 0)] = 160  # Elasticsearch away: records arrive, nothing is delivered or committed
    await watch.tick()
    assert _lag(runtime, 0) == 120


async def test_the_lag_of_a_revoked_partition_goes():
    consumer = Consumer({TP(RAW, 0): 100, TP(RAW, 1): 50}, {TP(RAW, 0): 40, TP(RAW, 1): 50})
    watch, runtime, _ = _watch(consumer)
    await watch.tick()
    assert _lag(runtime, 1) == 0
    del consumer.ends[TP(RAW, 1)]  # moved to another worker, which reports it now
    await watch.tick()
    assert _lag(runtime, 1) is None and _lag(runtime, 0) == 60


async def test_a_broker_that_times_out_does_not_crash_the_worker(caplog):
    consumer = Consumer({TP(RAW, 0): 100}, {TP(RAW, 0): 40})
    consumer.highwaters_error = KafkaTimeoutError()  # aiokafka's end_offsets, after 90 s without a broker
    watch, _, now = _watch(consumer)
    for seconds in (0, 5, 10, 61):
        now[0] = seconds
        await watch.tick()
    failures = [r.getMessage() for r in caplog.records if "partition watch failed" in r.getMessage()]
    assert len(failures) == 2 and "KafkaTimeoutError" in failures[0]  # once a minute, not at every tick


async def test_a_stalled_partition_revoked_before_its_rewind_does_not_crash_the_worker():
    stuck, gone = TP(RAW, 0), TP(RAW, 1)  # neither ever committed: both are sought to offset 0
    consumer = Consumer({stuck: 100, gone: 20}, {stuck: None, gone: None})
    watch, runtime, now = _watch(consumer)
    await watch.tick()
    consumer.revoked.add(gone)  # the rebalance took it between the look and the seek
    now[0] = 61.0
    await watch.tick()
    assert consumer.sought == ["committed", (stuck, 0)]
    assert runtime.metrics.registry.get_sample_value("finsent_stream_stall_rewinds_total") == 1
    assert runtime.metrics.registry.get_sample_value("finsent_stream_stalled") == 1
