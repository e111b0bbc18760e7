"""Window aggregates are versioned in Elasticsearch: one computed from older state (a worker that lost its
partition while Elasticsearch was away) cannot overwrite a newer one, nor reach the aggregates topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from finsent.settings import Settings
from stream.aggregator import WindowAggregator
from stream.es_sink import BulkItem, ElasticsearchSink, classify
from stream.metrics import WorkerMetrics
from stream.windows import WindowEvent

T0 = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)


class _Elasticsearch:
    """Bulk indexing as Elasticsearch does it: a plain index overwrites; ``external_gte`` answers 409
    when the stored version is higher."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[int, dict]] = {}

    async def bulk(self, operations):
        items = []
        for action, doc in zip(operations[::2], operations[1::2], strict=True):
            meta = action["index"]
            stored = self.docs.get(meta["_id"])
            version = (stored[0] if stored else 0) + 1
            if meta.get("version_type") == "external_gte":
                if stored and meta["version"] < stored[0]:
                    error = {"type": "version_conflict_engine_exception",
                             "reason": f"current version [{stored[0]}] is higher than [{meta['version']}]"}
                    items.append({"index": {"_id": meta["_id"], "status": 409, "error": error}})
                    continue
                version = meta["version"]
            self.docs[meta["_id"]] = (version, doc)
            items.append({"index": {"_id": meta["_id"], "status": 201}})
        return {"items": items}


def _sink(es: _Elasticsearch) -> ElasticsearchSink:
    async def sleep(delay):
        raise AssertionError("nothing here is retried")

    sink = ElasticsearchSink(Settings(), sleep=sleep)
    sink.client = es
    return sink


def test_a_versioned_item_elasticsearch_holds_a_newer_version_of_is_superseded_not_rejected():
    es = _Elasticsearch()
    sink = _sink(es)

    async def run():
        assert await sink.index_versioned("a", [BulkItem("w", {"count": 3}, version=5)]) == ([], [])
        assert await sink.index_versioned("a", [BulkItem("w", {"count": 3}, version=5)]) == ([], [])  # a retry
        older = BulkItem("w", {"count": 2}, version=4)
        assert await sink.index_versioned("a", [older, BulkItem("v", {}, version=1)]) == ([], [older])
        with pytest.raises(ValueError, match="index_versioned"):
            await sink.index("a", [older])  # whose caller would not hear of it

    asyncio.run(run())
    assert es.docs["w"] == (5, {"count": 3}) and "v" in es.docs
    # A conflict of an item sent without a version is not ours to explain away: rejected, as before.
    conflict = {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "r"}}}
    _, _, rejected, superseded = classify([BulkItem("d", {})], [conflict])
    assert [r.status for r in rejected] == [409] and superseded == []


def test_an_older_aggregate_cannot_overwrite_a_newer_one_nor_reach_the_topic():
    es = _Elasticsearch()
    sent: list[tuple[str, int]] = []

    def worker(name: str, registry: CollectorRegistry) -> WindowAggregator:
        async def send_aggregate(agg):
            sent.append((name, agg.count))
            return asyncio.sleep(0)

        return WindowAggregator(Settings(windows="1m"), _sink(es), WorkerMetrics(registry),
                                send_aggregate=send_aggregate, clock=lambda: T0)

    def ev(offset: int) -> WindowEvent:
        return WindowEvent("AAPL", f"d{offset}", T0, "positive", 0.5, 0.9, 0, offset)

    old_registry = CollectorRegistry()
    new_owner, old_owner = worker("new", CollectorRegistry()), worker("old", old_registry)
    new_store: dict = {}
    old_store: dict = {}  # the same changelog state as the new owner restored
    # The old owner's batch waited out an outage through a rebalance; the new owner got further first.
    assert [a.count for a in asyncio.run(new_owner.process(new_store, [ev(1), ev(2), ev(3)]))] == [3]
    assert asyncio.run(old_owner.process(old_store, [ev(1), ev(2)])) == []
    [(_, doc)] = es.docs.values()
    assert doc["count"] == 3 and sent == [("new", 3)]
    assert old_registry.get_sample_value("finsent_stream_superseded_aggregates_total") == 1.0
    assert old_registry.get_sample_value("finsent_stream_aggregates_total") == 0.0
    assert "AAPL" in old_store  # counted all the same: its events are acked
