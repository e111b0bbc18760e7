"""Bulk response classification and back-off (the sink's pure parts)."""

from __future__ import annotations

import random

import pytest

from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError
from elasticsearch.serializer import NdjsonSerializer

from finsent.settings import Settings
from stream import es_sink
from stream.es_sink import Backoff, BulkItem, ElasticsearchSink, classify, cut, held_reason, request_bytes
from stream.pipeline import text_to_score
from stream.validation import Origin, dead_letter, parse_raw
from finsent.schemas import RawDocument, RecordError, utc_now


def test_classify_splits_done_retry_and_rejected():
    items = [BulkItem(str(i), {}) for i in range(6)]
    answer = [
        {"index": {"_id": "0", "status": 201}},
        {"index": {"_id": "1", "status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        {"index": {"_id": "2", "status": 400, "error": {
            "type": "strict_dynamic_mapping_exception", "reason": "mapping set to strict",
            "caused_by": {"type": "x", "reason": "y"}}}},
        {"index": {"_id": "3", "status": 503}},
        # An operator's write block (Elasticsearch 9.3's answer): the index, not the document, refuses.
        {"index": {"_id": "4", "status": 403, "error": {
            "type": "cluster_block_exception", "reason": "index [d] blocked by: [FORBIDDEN/8/index write (api)];"}}},
        {"index": {"_id": "5", "status": 403, "error": {"type": "security_exception", "reason": "no privilege"}}},
    ]
    done, retry, rejected, _ = classify(items, answer)
    assert [i.id for i in done] == ["0"]
    assert [i.id for i in retry] == ["1", "3", "4"]
    assert [(r.item.id, r.status) for r in rejected] == [("2", 400), ("5", 403)]
    assert "strict_dynamic_mapping_exception: mapping set to strict (caused by x: y)" == rejected[0].reason


def test_classify_holds_errors_of_the_whole_index_and_rejects_the_document_s_own():
    items = [BulkItem(str(i), {}) for i in range(4)]
    no_write = "no write index is defined for alias [finsent-docs]. The write index may be explicitly disabled"
    answer = [
        {"index": {"status": 404, "error": {"type": "index_not_found_exception",  # auto-create off, the index gone
                                            "reason": "no such index [d] and [action.auto_create_index] is [false]"}}},
        {"index": {"status": 400, "error": {"type": "illegal_argument_exception", "reason": no_write}}},
        {"index": {"status": 400, "error": {"type": "index_closed_exception", "reason": "closed"}}},
        {"index": {"status": 400, "error": {"type": "illegal_argument_exception", "reason": "field [x] is bad"}}},
    ]
    done, retry, rejected, _ = classify(items, answer)
    assert done == [] and [i.id for i in retry] == ["0", "1", "2"] and [r.item.id for r in rejected] == ["3"]
    assert held_reason(answer).startswith("index_not_found_exception: no such index [d]")
    assert held_reason(answer[3:]) == ""


def test_request_bytes_is_the_size_the_client_sends():
    items = [BulkItem("é1", {"text": "Gewinn gestiegen ü", "score": 0.25, "tickers": ["AAPL"]}), BulkItem("2", {})]
    operations = [line for item in items for line in ({"index": {"_index": "docs", "_id": item.id}}, item.doc)]
    assert sum(request_bytes("docs", item) for item in items) == len(NdjsonSerializer().dumps(operations))


def test_cut_keeps_order_and_puts_a_large_item_alone():
    items = [BulkItem(str(i), {}) for i in range(5)]
    runs = cut(items, [4, 4, 4, 11, 1], max_bytes=8)
    assert [[i.id for i in run] for run in runs] == [["0", "1"], ["2"], ["3"], ["4"]]


def _too_large() -> ApiError:
    meta = ApiResponseMeta(413, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "localhost", 9200))
    return ApiError("Request Entity Too Large", meta=meta, body=None)


class _Client:
    """Elasticsearch whose request limit is ``limit`` bytes (413 above) and whose index is missing
    for the first ``missing`` requests."""

    def __init__(self, limit: int, missing: int = 0) -> None:
        self.limit, self.missing, self.requests = limit, missing, []

    async def bulk(self, operations):
        self.requests.append([op["index"]["_id"] for op in operations[::2]])
        if len(NdjsonSerializer().dumps(operations)) > self.limit:
            raise _too_large()
        if self.missing:
            self.missing -= 1
            error = {"type": "index_not_found_exception", "reason": "no such index [docs]"}
            return {"items": [{"index": {"status": 404, "error": error}} for _ in operations[::2]]}
        return {"items": [{"index": {"status": 201}} for _ in operations[::2]]}


def _sink(client: _Client) -> tuple[ElasticsearchSink, list[str]]:
    async def sleep(delay):
        pass

    retries: list[str] = []
    sink = ElasticsearchSink(Settings(), sleep=sleep, on_retry=retries.append)
    sink.client = client
    return sink, retries


async def test_bulk_requests_are_cut_by_bytes(monkeypatch):
    items = [BulkItem(str(i), {"text": "x" * 1000}) for i in range(10)]
    monkeypatch.setattr(es_sink, "MAX_BULK_BYTES", 3 * request_bytes("docs", items[0]))
    client = _Client(limit=10**9)
    sink, _ = _sink(client)
    assert await sink.index("docs", items) == []
    assert client.requests == [["0", "1", "2"], ["3", "4", "5"], ["6", "7", "8"], ["9"]]


async def test_a_request_answered_413_is_sent_in_halves_and_a_document_too_large_alone_is_rejected():
    items = [BulkItem(str(i), {"text": "x" * (5000 if i == 2 else 1000)}) for i in range(4)]
    client = _Client(limit=3000)  # two small documents fit, the large one never does
    sink, _ = _sink(client)
    [rejection] = await sink.index("docs", items)
    assert rejection.item.id == "2" and rejection.status == 413 and "http.max_content_length" in rejection.reason
    assert client.requests == [["0", "1", "2", "3"], ["0", "1"], ["2", "3"], ["2"], ["3"]]


async def test_a_missing_index_holds_the_documents_until_it_is_there():
    client = _Client(limit=10**9, missing=2)  # auto-create off: an operator makes the index
    sink, retries = _sink(client)
    assert await sink.index("docs", [BulkItem("a", {}), BulkItem("b", {})]) == []
    assert len(client.requests) == 3 and len(retries) == 2
    assert all("index_not_found_exception" in why for why in retries)


def test_classify_refuses_a_short_answer():
    with pytest.raises(ValueError):
        classify([BulkItem("a", {})], [])


def test_backoff_is_jittered_and_capped():
    rng = random.Random(1)
    backoff = Backoff(base=0.2, cap=5)
    delays = [backoff.delay(a, rng) for a in range(40)]
    assert all(0.1 <= d <= 5 for d in delays)
    assert len(set(delays)) == len(delays)  # jitter: no two workers retry in lockstep
    assert max(delays[:2]) <= 0.4


def test_parse_raw_reasons():
    doc = RawDocument(id="a", source="s", text="hello", ingested_at=utc_now())
    assert parse_raw(doc.to_json(), 10_000).id == "a"
    for value, words in [(None, "tombstone"), (b"", "empty"), (b"[1]", "JSON object"),
                         (b"x" * 20_000, "over the limit"), (b'{"id": "a"}', "invalid RawDocument")]:
        with pytest.raises(RecordError) as info:
            parse_raw(value, 10_000)
        assert words in info.value.reason


def test_dead_letter_keeps_undecodable_bytes():
    letter = dead_letter("validate", "bad", b"\xff\xfeabc", Origin("t.raw", 2, 41))
    assert letter.original == "\\xff\\xfeabc" and (letter.topic, letter.partition, letter.offset) == ("t.raw", 2, 41)


def test_title_is_scored_with_the_text():
    doc = RawDocument(id="a", source="s", title="Profit warning", text="Shares fell.", ingested_at=utc_now())
    assert text_to_score(doc) == "Profit warning. Shares fell."
    same = doc.model_copy(update={"text": "Profit warning: shares fell."})
    assert text_to_score(same) == "Profit warning: shares fell."
