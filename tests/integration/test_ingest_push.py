"""The HTTP push endpoint: status codes, partial batches, and documents in the real Kafka."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from ingest.items import SourceItem
from ingest.pipeline import Pipeline
from ingest.push import make_app
from tests.integration.ingest_support import consume_raw

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def serving(settings) -> AsyncIterator[tuple[Pipeline, str]]:
    """The push endpoint of ``settings`` on a free port: its pipeline and base URL."""
    pipeline = Pipeline.build(settings, CollectorRegistry())
    pipeline.start()
    runner = web.AppRunner(make_app(pipeline, settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield pipeline, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()
        pipeline.close()


@pytest.fixture
def push_settings(bootstrapped, tmp_path):
    return bootstrapped.model_copy(update={
        "state_dir": tmp_path / "state", "push_token": SecretStr(TOKEN), "push_max_bytes": 4096})


async def test_push_endpoint(push_settings) -> None:
    async with serving(push_settings) as (pipeline, base):
        async with httpx.AsyncClient(base_url=base) as client:
            one = {"text": "Nvidia shares jump after record data-center sales", "source": "wire", "source_id": "n1",
                   "published_at": "2026-11-27T10:00:00Z"}
            ok = await client.post("/documents", json=one, headers=AUTH)
            assert ok.status_code == 202 and ok.json()["accepted"] == 1

            batch = [{"text": "Microsoft raises its dividend", "source_id": "p2", "source": "wire"},
                     {"title": "no text"},
                     {"text": "Zone-less time", "published_at": "2026-11-27T10:00:00"},
                     one]
            partial = await client.post("/documents", json={"documents": batch}, headers=AUTH)
            body = partial.json()
            assert partial.status_code == 202 and (body["accepted"], body["duplicates"]) == (1, 1)
            assert {r["where"]: r["reason"] for r in body["rejected"]} == {
                "documents[1]": "invalid_document", "documents[2]": "naive_timestamp"}
            assert any(e["field"] == "text" for e in body["rejected"][0]["errors"])

            # A URL that is too long only once canonical ("/" becomes "%2F"): that document is rejected,
            # the other goes through, and the batch is not a 500 that leaves the first one half-remembered.
            too_long = {"text": "Tesla recalls cars", "source": "wire", "source_id": "p3",
                        "url": "https://x.com/?q=" + "/" * 1400}
            mixed = await client.post("/documents", headers=AUTH,
                                      json=[{"text": "Intel cuts jobs", "source": "wire", "source_id": "p4"}, too_long])
            assert mixed.status_code == 202 and mixed.json()["accepted"] == 1
            assert [(r["where"], r["reason"]) for r in mixed.json()["rejected"]] == [("documents[1]", "url_too_long")]
            again = await client.post("/documents", json={"text": "Intel cuts jobs", "source": "wire",
                                                          "source_id": "p4"}, headers=AUTH)
            assert again.status_code == 202 and again.json()["duplicates"] == 1

            bad = await client.post("/documents", json=[{"text": ""}, {"text": "x", "colour": "red"}], headers=AUTH)
            assert bad.status_code == 400
            assert {e["field"] for r in bad.json()["rejected"] for e in r["errors"]} == {"text", "colour"}
            for raw in (b"{not json", b"\xff\xfe", b"[]", b""):
                assert (await client.post("/documents", content=raw, headers=AUTH)).status_code == 400, raw

            assert (await client.post("/documents", json=one)).status_code == 401
            wrong = await client.post("/documents", json=one, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "Bearer" in wrong.headers["WWW-Authenticate"]
            assert (await client.post("/documents", json=one, headers={"Authorization": TOKEN})).status_code == 401

            big = {"text": "x" * 5000}
            assert (await client.post("/documents", json=big, headers=AUTH)).status_code == 413

            async def chunked():  # no Content-Length: the limit is enforced while reading
                for _ in range(10):
                    yield b" " * 1000

            assert (await client.post("/documents", content=chunked(), headers=AUTH)).status_code == 413

            assert (await client.get("/healthz")).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert 'finsent_ingest_produced_total{source="push"} 3.0' in metrics
            assert 'finsent_ingest_duplicates_total{kind="id",source="push"} 2.0' in metrics

    docs = {d.source_id: d for _, d in consume_raw(push_settings, 3)}
    assert set(docs) == {"n1", "p2", "p4"}
    assert docs["n1"].tickers == ["NVDA"] and docs["n1"].source == "wire"


async def test_a_sender_s_link_neither_hides_nor_replaces_an_api_article(push_settings, tmp_path) -> None:
    # RELIABILITY.md, "A pushed link or text hides no feed's document": acme, confined to push:acme, pushes a text with
    # an API article's link and no source_id before the API source is polled. Both reach Kafka, under two ids (the
    # index keeps both); acme's own second copy is still a duplicate.
    tokens = tmp_path / "push-tokens"
    tokens.write_text("acme: acme-token-0123456789 push:acme\n")
    tokens.chmod(0o600)
    settings = push_settings.model_copy(update={"push_tokens_file": tokens})
    acme = {"Authorization": "Bearer acme-token-0123456789"}
    link = "https://news.example.com/acme-record-sales"
    async with serving(settings) as (pipeline, base):
        async with httpx.AsyncClient(base_url=base) as client:
            forged = await client.post("/documents", headers=acme,
                                       json={"text": "Acme files for bankruptcy", "source": "push:acme", "url": link})
            assert forged.status_code == 202 and forged.json()["accepted"] == 1
            article = SourceItem(source="api:newsapi", text="Acme shares jump after record sales", url=link)
            assert (await pipeline.submit("api:newsapi", [article])).produced == 1
            again = await client.post("/documents", headers=acme, json={"text": "Acme files for bankruptcy (update)",
                                                                        "source": "push:acme", "url": link})
            assert again.status_code == 202 and again.json()["duplicates"] == 1

    records = consume_raw(settings, 2)
    docs = {d.source: d for _, d in records}
    assert len(records) == 2 and set(docs) == {"push:acme", "api:newsapi"}
    assert docs["push:acme"].id != docs["api:newsapi"].id
    assert docs["push:acme"].id == forged.json()["ids"][0]


def test_push_refuses_to_start_without_token(settings, tmp_path) -> None:
    pipeline = Pipeline.build(settings.model_copy(update={"state_dir": tmp_path}), CollectorRegistry())
    with pytest.raises(ValueError, match="FINSENT_PUSH_TOKEN"):
        make_app(pipeline, settings.model_copy(update={"push_token": None}))


def test_generated_token_is_kept_private_and_reused(settings, tmp_path) -> None:
    from ingest.push import ensure_token

    unset = settings.model_copy(update={"state_dir": tmp_path, "push_token": None})
    first, second = ensure_token(unset), ensure_token(unset)
    path = tmp_path / "ingest" / "push-token"
    assert first.push_token.get_secret_value() == second.push_token.get_secret_value() == path.read_text()
    assert len(path.read_text()) >= 32 and path.stat().st_mode & 0o077 == 0
    explicit = settings.model_copy(update={"state_dir": tmp_path, "push_token": SecretStr("mine")})
    assert ensure_token(explicit).push_token.get_secret_value() == "mine"
