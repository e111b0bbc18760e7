"""The Elasticsearch sink against the real server: idempotent ids, per-item rejections."""

from __future__ import annotations

import pytest

from finsent import clients
from stream.es_sink import BulkItem, ElasticsearchSink

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
