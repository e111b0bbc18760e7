"""The Elasticsearch sink against the real server: idempotent ids, per-item rejections, versioned aggregates."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from finsent import clients
from stream.aggregator import WindowAggregator
from stream.es_sink import Backoff, BulkItem, ElasticsearchSink
from stream.metrics import WorkerMetrics
from stream.windows import WindowEvent, aggregate_id

pytestmark = pytest.mark.integration


async def test_sink_indexes_by_id_and_rejects_a_bad_document(bootstrapped):
    settings = bootstrapped
    sink = ElasticsearchSink(settings)
    await sink.start()
    try:
        index = settings.index("labels")
        good = {"doc_id": "d1", "text": "up", "label": "positive", "annotator": "t", "source": "api",
                "labeled_at": "2025-01-01T00:00:00Z"}
        bad = dict(good, unknown_field=1)  # strict mapping: a mapping error, not a retry
        rejected = await sink.index(index, [BulkItem("a", good), BulkItem("b", bad), BulkItem("a", good)])
        assert [(r.item.id, r.status) for r in rejected] == [("b", 400)]
        assert "strict_dynamic_mapping_exception" in rejected[0].reason
        assert await sink.index(index, [BulkItem("a", good)]) == []  # a re-delivery overwrites
        with clients.elasticsearch(settings) as es:
            es.indices.refresh(index=index)
            assert es.count(index=index)["count"] == 1
        assert await sink.ping()
    finally:
        await sink.stop()


async def test_an_index_wide_error_holds_the_batch_until_it_is_mended(bootstrapped):
    # A closed index and an alias with no write index refuse each document alike, per item (400): the sink
    # waits for an operator rather than dead-letter the lot, then indexes everything once mended.
    settings = bootstrapped
    retries: list[str] = []
    sink = ElasticsearchSink(settings, backoff=Backoff(base=0.05, cap=0.2), on_retry=retries.append)
    await sink.start()
    closed, first, second, alias = (settings.index(name) for name in ("held-closed", "held-1", "held-2", "held"))
    items = [BulkItem(str(i), {"text": f"doc {i}"}) for i in range(3)]
    try:
        with clients.elasticsearch(settings) as es:
            es.indices.create(index=closed)
            es.indices.close(index=closed)
            es.indices.create(index=first, aliases={alias: {}})
            es.indices.create(index=second, aliases={alias: {}})
            for target, mend in ((closed, lambda: es.indices.open(index=closed)),
                                 (alias, lambda: es.indices.put_alias(index=first, name=alias,
                                                                      is_write_index=True))):
                retries.clear()
                task = asyncio.create_task(sink.index(target, items))
                while len(retries) < 2:
                    assert not task.done(), f"{target}: {task.result()}"  # held, not rejected
                    await asyncio.sleep(0.05)
                assert "index_closed_exception" in retries[0] or "no write index" in retries[0]
                mend()
                assert await asyncio.wait_for(task, 60) == []
            es.indices.refresh(index=f"{closed},{first}")
            assert es.count(index=closed)["count"] == 3 and es.count(index=first)["count"] == 3
    finally:
        await sink.stop()
        with clients.elasticsearch(settings) as es:
            es.options(ignore_status=404).indices.delete(index=f"{closed},{first},{second}")


async def test_an_older_aggregate_cannot_overwrite_a_newer_one(bootstrapped):
    # A worker that lost its window partition while an outage held its batch publishes after the new owner, from
    # the same restored state but fewer events: Elasticsearch keeps the newer aggregate (409 to the older one),
    # and the older one is not sent to the aggregates topic.
    settings = bootstrapped.model_copy(update={"windows": "1m"})
    at = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)
    events = [WindowEvent("AAPL", f"d{offset}", at, "positive", 0.5, 0.9, 0, offset) for offset in range(1, 4)]
    sink = ElasticsearchSink(settings)
    await sink.start()
    sent: list[tuple[str, int]] = []

    def worker(name: str, registry: CollectorRegistry) -> WindowAggregator:
        async def send_aggregate(agg):
            sent.append((name, agg.count))
            return asyncio.sleep(0)

        return WindowAggregator(settings, sink, WorkerMetrics(registry), send_aggregate=send_aggregate,
                                clock=lambda: at)

    try:
        old_registry = CollectorRegistry()
        [newer] = await worker("new", CollectorRegistry()).process({}, events)
        assert await worker("old", old_registry).process({}, events[:2]) == []
        assert old_registry.get_sample_value("finsent_stream_superseded_aggregates_total") == 1.0
        assert sent == [("new", 3)]
        with clients.elasticsearch(settings) as es:
            stored = es.get(index=settings.index("aggregates"), id=aggregate_id(newer))
        assert stored["_source"]["count"] == 3 and stored["_version"] == 4  # the sum of the watermarks + 1
        # The new owner's retry of the same batch (same version) still goes through.
        assert [a.count for a in await worker("new", CollectorRegistry()).process({}, events)] == [3]
    finally:
        await sink.stop()
