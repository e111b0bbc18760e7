"""The Elasticsearch sink against the real server: idempotent ids, per-item rejections."""

from __future__ import annotations

import asyncio

import pytest

from finsent import clients
from stream.es_sink import Backoff, BulkItem, ElasticsearchSink

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
