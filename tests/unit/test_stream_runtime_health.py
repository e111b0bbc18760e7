"""The worker's /health verdict: ready only once it consumes, which needs its consumer group formed."""

from collections import namedtuple

from prometheus_client import CollectorRegistry

from finsent.settings import Settings
from stream.runtime import WorkerRuntime

TP = namedtuple("TP", "topic partition")


def _runtime() -> WorkerRuntime:
    runtime = WorkerRuntime(Settings(topic_prefix="unithealth"), lambda ref: None, "champion", CollectorRegistry())
    runtime.ready.set()  # model loaded, Elasticsearch reached
    return runtime


def test_a_loaded_worker_whose_group_has_not_formed_is_not_healthy():
    ok, checks = _runtime().health()
    assert not ok
    assert checks["group"] == "joining" and checks["partitions"] is None


def test_after_the_rebalance_it_counts_its_raw_partitions_only():
    runtime = _runtime()
    raw = runtime.settings.topic("raw")
    runtime.on_rebalance_end({TP(raw, 0), TP(raw, 3), TP("unithealth.stream-window-events", 0),
                              TP("unithealth-stream-windows-changelog", 0)})
    ok, checks = runtime.health()
    assert ok
    assert checks["group"] == "joined" and checks["partitions"] == 2
    assert runtime.metrics.registry.get_sample_value("finsent_stream_assigned_partitions") == 2


def test_owning_no_partition_is_healthy_more_workers_than_partitions():
    runtime = _runtime()
    runtime.on_rebalance_end(set())
    ok, checks = runtime.health()
    assert ok and checks["partitions"] == 0
