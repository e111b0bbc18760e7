"""The push endpoint's answers when a document or the pipeline misbehaves (a real local server;
tests/integration/test_ingest_push.py has the rest, against the real Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from finsent.settings import load_settings
from ingest.pipeline import Pipeline
from ingest.push import make_app
from tests.unit.test_ingest_pipeline import started_pipeline

AUTH = {"Authorization": "Bearer tok"}
SETTINGS = load_settings().model_copy(update={"push_token": SecretStr("tok"), "push_rate_limit": 0})


@pytest.fixture
def pipeline(tmp_path):
    with started_pipeline(tmp_path) as pipe:
        yield pipe


@contextlib.asynccontextmanager
async def serving(app):
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def doc(source_id: str, **fields) -> dict:
    return {"text": f"Acme shares rise, story {source_id}", "source": "wire", "source_id": source_id} | fields


async def test_a_bad_document_is_listed_and_the_others_go_through(pipeline: Pipeline) -> None:
    async with serving(make_app(pipeline, SETTINGS)) as client:
        bad_url = doc("2", url="https://x.com/?q=" + "é" * 1000)  # valid as sent, too long once canonical
        answer = await client.post("/documents", json=[doc("1"), bad_url], headers=AUTH)
        body = await answer.json()
        assert answer.status == 202 and body["accepted"] == 1
        assert [(r["where"], r["reason"]) for r in body["rejected"]] == [("documents[1]", "url_too_long")]
        again = await client.post("/documents", json=[doc("1")], headers=AUTH)
        assert (await again.json())["duplicates"] == 1  # it did reach Kafka
        alone = await client.post("/documents", json=bad_url, headers=AUTH)
        assert alone.status == 400 and (await alone.json())["rejected"][0]["reason"] == "url_too_long"


async def test_batches_beyond_the_backlog_are_told_to_come_back(pipeline: Pipeline) -> None:
    from ingest.push import BACKLOG

    pipeline.sink.gate = threading.Event()  # Kafka does not answer for now
    app = make_app(pipeline, SETTINGS, max_waiting=2)
    async with serving(app) as client:
        waiting = [asyncio.create_task(client.post("/documents", json=doc(str(n)), headers=AUTH)) for n in (1, 2)]
        for _ in range(5000):
            if app[BACKLOG].waiting == 2:
                break
            await asyncio.sleep(0.01)
        busy = await client.post("/documents", json=doc("3"), headers=AUTH)
        assert busy.status == 503 and busy.headers["Retry-After"] == "5"
        assert "waiting for Kafka" in (await busy.json())["error"]
        pipeline.sink.gate.set()
        assert [(await answer).status for answer in waiting] == [202, 202]
        assert (await client.post("/documents", json=doc("3"), headers=AUTH)).status == 202


async def test_a_failing_pipeline_answers_json_not_a_crash(pipeline: Pipeline) -> None:
    pipeline.sink.error = RuntimeError("a bug in the sink")
    async with serving(make_app(pipeline, SETTINGS)) as client:
        answer = await client.post("/documents", json=doc("1"), headers=AUTH)
        assert answer.status == 500 and "server log" in (await answer.json())["error"]
        pipeline.sink.error = None
        again = await client.post("/documents", json=doc("1"), headers=AUTH)
        assert (await again.json())["accepted"] == 1  # the failed batch left nothing behind


async def test_an_authorization_header_that_is_not_utf8_is_a_wrong_token(pipeline: Pipeline) -> None:
    async with serving(make_app(pipeline, SETTINGS)) as client:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(b"POST /documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")
        await writer.drain()
        answer = await reader.read(65536)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401") and b"bearer token" in answer


async def test_more_documents_than_the_limit_are_refused_whole_before_any_is_validated(pipeline: Pipeline) -> None:
    settings = SETTINGS.model_copy(update={"push_max_documents": 3})
    async with serving(make_app(pipeline, settings)) as client:
        answer = await client.post("/documents", json=[doc(str(n)) for n in range(4)], headers=AUTH)
        assert answer.status == 413
        assert (await answer.json())["error"] == ("4 documents in one request, over the limit of 3 "
                                                  "(FINSENT_PUSH_MAX_DOCUMENTS): send them in several requests")
        assert pipeline.sink.sent == []
        assert pipeline.metrics.value("finsent_ingest_errors_total", reason="too_many_documents") == 1
        fits = await client.post("/documents", json={"documents": [doc(str(n)) for n in range(3)]}, headers=AUTH)
        assert fits.status == 202 and (await fits.json())["accepted"] == 3


async def test_an_answer_lists_the_first_rejections_counts_all_and_the_log_has_one_line(pipeline: Pipeline,
                                                                                        caplog) -> None:
    from ingest.push import MAX_SHOWN

    bad = [{"text": "", "colour": "red"}] * (MAX_SHOWN + 30) + [{"text": "Acme", "published_at": "2025-01-01T00:00"}]
    async with serving(make_app(pipeline, SETTINGS)) as client:
        with caplog.at_level("WARNING", logger="ingest"):
            answer = await client.post("/documents", json=bad + [doc("1")], headers=AUTH)
            body = await answer.json()
    assert answer.status == 202 and body["accepted"] == 1 and body["rejected_count"] == MAX_SHOWN + 31
    assert [r["where"] for r in body["rejected"]] == [f"documents[{n}]" for n in range(MAX_SHOWN)]
    [line] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert line.startswith(f"push: skipped {MAX_SHOWN + 31} document(s) of a batch (invalid_document 50, "
                           "naive_timestamp 1); the first: documents[0]: text:")


async def test_the_body_is_validated_off_the_event_loop(pipeline: Pipeline, monkeypatch) -> None:
    import ingest.push

    threads = []

    def recording(body, limit):
        threads.append(threading.current_thread())
        return read_documents(body, limit)

    read_documents = ingest.push.read_documents
    monkeypatch.setattr(ingest.push, "read_documents", recording)
    async with serving(make_app(pipeline, SETTINGS)) as client:
        assert (await client.post("/documents", json=doc("1"), headers=AUTH)).status == 202
    assert threads and threads[0] is not threading.main_thread()


def test_a_document_with_thousands_of_unknown_fields_names_ten_and_counts_the_rest() -> None:
    from ingest.inbound import MAX_FIELD_ERRORS, to_item
    from ingest.items import Rejected

    with pytest.raises(Rejected) as caught:
        to_item({"text": "x", **{"f" * 500 + str(n): 1 for n in range(5000)}}, default_source="push", where="d")
    assert len(caught.value.errors) == MAX_FIELD_ERRORS
    assert all(len(e["field"]) <= 101 for e in caught.value.errors)
    assert caught.value.detail.endswith(f"; and {5000 - MAX_FIELD_ERRORS} more")


async def test_the_pages_without_a_token_refuse_a_foreign_host(pipeline: Pipeline) -> None:
    # DNS rebinding: a page whose name points here must not read the counters; a sender has its token instead.
    async with serving(make_app(pipeline, SETTINGS)) as client:
        for path in ("/", "/healthz", "/metrics"):
            refused = await client.get(path, headers={"Host": "rebound.attacker.example:8080"})
            assert refused.status == 421 and "FINSENT_ALLOWED_HOSTS" in (await refused.json())["error"], path
        metrics = await client.get("/metrics", headers={"Host": "localhost:8080"})
        assert metrics.status == 200 and "finsent_ingest_produced_total" in await metrics.text()
        assert (await client.get("/healthz")).status == 200  # the client's own 127.0.0.1:port
        sent = await client.post("/documents", json=doc("h1"), headers={**AUTH, "Host": "push.example.com"})
        assert sent.status == 202
