"""The worker's /health verdict: ready only once it consumes, which needs its consumer group formed."""

import asyncio
import contextlib
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


async def test_a_stuck_window_agent_keeps_the_worker_unhealthy_while_raw_batches_succeed():
    runtime = _runtime()
    runtime.on_rebalance_end(set())
    attempts = 0

    async def window_batch():
        nonlocal attempts
        attempts += 1
        raise OverflowError("date value out of range")

    async def raw_batch():
        return "delivered"

    stuck = asyncio.create_task(runtime.until_done("window batch", window_batch))
    while not attempts:
        await asyncio.sleep(0)
    try:
        assert await runtime.until_done("raw batch delivery", raw_batch) == "delivered"
        ok, checks = runtime.health()
        assert not ok and not checks["processing"]
        assert checks["error"] == "window batch: OverflowError: date value out of range"
    finally:
        stuck.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stuck
    assert runtime.health()[0] and runtime.failing is None  # a cancelled retry (rebalance, shutdown) is over


def test_the_lag_of_a_partition_moved_to_another_worker_is_no_longer_reported():
    runtime = _runtime()
    raw = runtime.settings.topic("raw")
    runtime.metrics.set_lag({0: 5, 3: 7})
    runtime.on_rebalance_end({TP(raw, 0)})
    assert runtime.metrics.registry.get_sample_value("finsent_stream_consumer_lag", {"partition": "0"}) == 5
    assert runtime.metrics.registry.get_sample_value("finsent_stream_consumer_lag", {"partition": "3"}) is None
