"""Labels through the CLI, the HTTP API and the Kafka topic land in the labels index."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from typer.testing import CliRunner

from finsent import clients
from finsent.schemas import LabelRecord
from retrain.label_indexer import LabelIndexer
from retrain.label_intake import LabelPublisher
from retrain.label_store import fetch_labels
from tests.topic_reading import topic_held

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"


def env_of(settings) -> dict[str, str]:
    return {"FINSENT_TOPIC_PREFIX": settings.topic_prefix, "FINSENT_INDEX_PREFIX": settings.index_prefix,
            "FINSENT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "FINSENT_ELASTICSEARCH_URL": settings.elasticsearch_url}


@pytest.fixture
def label_settings(bootstrapped):
    return bootstrapped.model_copy(update={"label_token": SecretStr(TOKEN), "label_max_bytes": 4096})


def drain(settings) -> LabelIndexer:
    with LabelIndexer(settings, refresh=True) as indexer:
        assert indexer.drain(threading.Event(), stall_s=60).to_the_end
    return indexer


def dlq_records(settings) -> list[dict]:
    return [orjson.loads(m.value) for m in topic_held(settings, "dlq")]  # the indexer has flushed and closed


async def test_labels_from_cli_http_and_kafka_land_in_elasticsearch(label_settings, tmp_path) -> None:
    from finsent.cli import app

    settings = label_settings
    runner = CliRunner()
    one = runner.invoke(app, ["labels", "add", "--text", "Profit soared", "--label", "Positive", "--doc-id", "d-cli"],
                        env=env_of(settings))
    assert one.exit_code == 0, one.output
    # A document from `finsent labels review`: marked as the review page marks its labels.
    picked = runner.invoke(app, ["labels", "add", "--text", "Mixed quarter", "--label", "neutral", "--doc-id", "d-rev",
                                 "--from-review"], env=env_of(settings))
    assert picked.exit_code == 0, picked.output
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("text,label,annotator\nSales fell,negative,alice\nFlat quarter,neutral,bob\n", encoding="utf-8")
    many = runner.invoke(app, ["labels", "add", "--csv", str(csv_file)], env=env_of(settings))
    assert many.exit_code == 0 and "published 2 label(s)" in many.output
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("text,label\nok,positive\nwhat,bullish\n", encoding="utf-8")
    refused = runner.invoke(app, ["labels", "add", "--csv", str(bad_csv)], env=env_of(settings))
    assert refused.exit_code == 1 and "bad.csv:3" in refused.output and "label" in refused.output

    from retrain.labels_http import create_app

    async with TestClient(TestServer(create_app(settings))) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = {"labels": [{"text": "Guidance cut", "label": "negative", "doc_id": "d-http", "annotator": "carol"}]}
        assert (await client.post("/labels", json=body)).status == 401
        assert (await client.post("/labels", json=body, headers={"Authorization": "Bearer nope"})).status == 401
        bad = await client.post("/labels", json={"text": "x", "label": "meh"}, headers=auth)
        assert bad.status == 400 and "label" in (await bad.json())["problems"][0]
        assert (await client.post("/labels", data=b"{not json", headers=auth)).status == 400
        big = await client.post("/labels", data=b"x" * 5000, headers=auth)
        assert big.status == 413
        # A label dated in the future would hold back every later label from retraining; one without a zone is a guess.
        late = [{"text": "x", "label": "neutral", "labeled_at": "2099-01-01T00:00:00Z"},
                {"text": "y", "label": "neutral", "labeled_at": "2025-01-01T00:00:00"}]
        refused = await client.post("/labels", json=late, headers=auth)
        assert refused.status == 400 and (await refused.json())["problems"] == [
            "labels[0]: labeled_at 2099-01-01T00:00:00+00:00 is in the future",
            "labels[1]: labeled_at: Input should have timezone info"]
        ok = await client.post("/labels", json=body, headers=auth)
        assert ok.status == 202 and (await ok.json())["accepted"] == 1

    # Straight onto the topic, as another system would; plus one garbage record.
    with LabelPublisher(settings) as publisher:
        publisher.publish([LabelRecord(doc_id="d-kafka", text="Beat estimates", label="positive", annotator="feed",
                                       source="kafka", labeled_at=datetime(2025, 3, 1, tzinfo=UTC))])
        publisher._producer.send(settings.topic("labels"), value=b'{"text": "no label"}')
        ahead = LabelRecord(doc_id="d-ahead", text="Dated ahead", label="neutral", labeled_at=datetime(2099, 1, 1,
                                                                                                         tzinfo=UTC))
        publisher._producer.send(settings.topic("labels"), value=ahead.to_json())  # past intake's check
        publisher._producer.flush()

    indexer = drain(settings)
    assert indexer.dead == 2
    with clients.elasticsearch(settings) as es:
        stored = {(r.doc_id, r.text): r for r in fetch_labels(es, settings)}
    assert set(stored) == {("d-cli", "Profit soared"), (None, "Sales fell"), (None, "Flat quarter"),
                           ("d-http", "Guidance cut"), ("d-kafka", "Beat estimates"), ("d-rev", "Mixed quarter")}
    assert stored[("d-cli", "Profit soared")].label == "positive"
    assert (stored[("d-cli", "Profit soared")].source, stored[("d-rev", "Mixed quarter")].source) == ("cli", "review")
    assert stored[(None, "Sales fell")].annotator == "alice"
    assert stored[("d-http", "Guidance cut")].annotator == "carol"
    # Found by what they hold: the DLQ has several partitions, read in no set order.
    letters = {("Dated ahead" in letter["original"]): letter for letter in dlq_records(settings)}
    assert [letter["stage"] for letter in letters.values()] == ["labels", "labels"]
    assert "label: Field required" in letters[False]["reason"] and "in the future" in letters[True]["reason"]


def test_relabel_replaces_and_late_older_label_is_ignored(bootstrapped) -> None:
    settings = bootstrapped
    def rec(label: str, day: int) -> LabelRecord:
        return LabelRecord(doc_id="d1", text="t", label=label, annotator="ann", labeled_at=datetime(2025, 1, day, tzinfo=UTC))

    with LabelPublisher(settings) as publisher:
        publisher.publish([rec("negative", 1), rec("positive", 3), rec("neutral", 2)])
    indexer = drain(settings)
    assert indexer.dead == 0
    with clients.elasticsearch(settings) as es:
        stored = fetch_labels(es, settings)
    assert [(r.label, r.labeled_at.day) for r in stored] == [("positive", 3)]


def test_fresh_labels_resolve_with_the_earlier_labels_of_their_documents(bootstrapped) -> None:
    from datetime import timedelta

    from finsent.schemas import utc_now
    from retrain.context import Context
    from retrain.label_store import index_labels
    from retrain.metrics import RetrainMetrics

    settings = bootstrapped.model_copy(update={"trusted_annotators": "lead"})
    cutoff = utc_now() - timedelta(hours=1)

    def rec(label: str, annotator: str, minutes: int, doc_id: str | None, text: str) -> LabelRecord:
        return LabelRecord(doc_id=doc_id, text=text, label=label, annotator=annotator,
                           labeled_at=cutoff + timedelta(minutes=minutes))

    records = [rec("negative", "lead", -30, "d1", "Guidance cut for 2025"),  # before the cutoff, trusted
               rec("positive", "x", 10, "d1", "Guidance cut for 2025"),
               rec("negative", "lead", -20, None, "Shares of ACME fell https://t.co/a"),  # a copy of the next
               rec("positive", "y", 20, "d2", "shares of  acme FELL https://t.co/b"),
               rec("neutral", "lead", -10, "d3", "Guidance cut for 2026"),  # not labelled since: not fresh
               rec("positive", "z", 30, "d4", "Record quarter")]
    with clients.elasticsearch(settings) as es:
        assert index_labels(es, settings, records, refresh=True).indexed == len(records)
        ctx = Context(settings=settings, es=es, registry=None, producer=None, metrics=RetrainMetrics())
        resolved, unresolved = ctx.fresh_labels({"labels_until": cutoff.isoformat()})
    assert [(r.doc_id, r.label, r.rule) for r in resolved] == [
        ("d1", "negative", "trusted"), ("d2", "negative", "trusted"), ("d4", "positive", "single")]
    assert not unresolved


def test_a_label_dated_back_is_fresh_once_stored_after_the_champion_read_the_labels(bootstrapped) -> None:
    # An import of last month's labels after a retrain: by labeled_at alone no model would ever learn them.
    from datetime import timedelta

    from finsent.schemas import utc_now
    from retrain.context import Context
    from retrain.label_store import index_labels
    from retrain.metrics import RetrainMetrics

    settings = bootstrapped
    read_at = utc_now() - timedelta(minutes=30)  # when the champion's retrain read the labels
    cutoff = read_at - timedelta(minutes=5)  # the newest labeled_at it saw
    month_ago = cutoff - timedelta(days=30)
    seen = LabelRecord(doc_id="d5", text="Margins held up", label="neutral", annotator="x", labeled_at=month_ago)
    late = LabelRecord(doc_id="d6", text="Recall widens", label="negative", annotator="x", labeled_at=month_ago)
    with clients.elasticsearch(settings) as es:
        assert index_labels(es, settings, [seen], refresh=True, now=read_at - timedelta(minutes=10)).indexed == 1
        assert index_labels(es, settings, [late], refresh=True).indexed == 1
        ctx = Context(settings=settings, es=es, registry=None, producer=None, metrics=RetrainMetrics())
        resolved, _ = ctx.fresh_labels({"labels_until": cutoff.isoformat(), "labels_read_at": read_at.isoformat()})
        # A champion from before labels_read_at was recorded judges by labeled_at alone, as before.
        before, _ = ctx.fresh_labels({"labels_until": cutoff.isoformat()})
    assert [(r.doc_id, r.label) for r in resolved] == [("d6", "negative")]
    assert resolved[0].indexed_at is not None and resolved[0].indexed_at > read_at
    assert before == []


def test_a_label_stored_again_as_it_was_keeps_its_first_stamp_and_a_relabel_gets_a_new_one(bootstrapped) -> None:
    # A replay of the topic must not make its labels fresh again (each would count as new to the next retrain).
    from datetime import timedelta

    from retrain.label_store import index_labels

    settings = bootstrapped
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    first = LabelRecord(doc_id="d7", text="Deliveries slipped", label="negative", annotator="x", labeled_at=t0)
    relabel = first.model_copy(update={"label": "neutral", "labeled_at": t0 + timedelta(hours=1)})
    with clients.elasticsearch(settings) as es:
        index_labels(es, settings, [first], refresh=True, now=t0 + timedelta(days=1))
        replay = index_labels(es, settings, [first], refresh=True, now=t0 + timedelta(days=2))
        [kept] = fetch_labels(es, settings)
        index_labels(es, settings, [relabel], refresh=True, now=t0 + timedelta(days=3))
        [changed] = fetch_labels(es, settings)
    assert replay.indexed == 1 and kept.indexed_at == t0 + timedelta(days=1)
    assert (changed.label, changed.indexed_at) == ("neutral", t0 + timedelta(days=3))


def test_the_indexer_adds_an_upgrade_s_fields_to_a_labels_index_made_before_them(bootstrapped) -> None:
    # The mapping is strict: without indexed_at in it, every label of an upgraded indexer would go to the DLQ.
    from finsent import topology

    settings = bootstrapped
    index = settings.index("labels")
    older = {k: v for k, v in topology.MAPPINGS["labels"].items() if k != "indexed_at"}
    with clients.elasticsearch(settings) as es:
        es.indices.delete(index=index)
        es.indices.delete_index_template(name=index)  # as an older release left them: its template shaped it
        es.indices.create(index=index, mappings={"dynamic": "strict", "properties": older})
        producer = clients.kafka_producer(settings)
        producer.send(settings.topic("labels"), value=LabelRecord(
            text="Orders doubled", label="positive", labeled_at=datetime.now(UTC)).to_json())
        producer.flush(30)
        producer.close(10)
        indexer = drain(settings)
        properties = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        stored = fetch_labels(es, settings)
    assert "indexed_at" in properties and indexer.indexed == 1 and indexer.dead == 0
    assert [(r.text, r.indexed_at is not None) for r in stored] == [("Orders doubled", True)]


async def test_review_queue_from_api_and_cli(label_settings) -> None:
    from elasticsearch import helpers

    from finsent.cli import app
    from finsent.schemas import utc_now
    from retrain.labels_http import create_app

    settings = label_settings
    now = utc_now().isoformat()

    def doc(doc_id: str, probs: tuple[float, float, float], text: str) -> dict:
        p = dict(zip(("negative", "neutral", "positive"), probs))
        return {"id": doc_id, "source": "t", "text": text, "tickers": ["AAPL"], "ingested_at": now, "scored_at": now,
                "model_version": "v1", "sentiment": {"label": max(p, key=p.get), "score": p["positive"] - p["negative"],
                                                     "probabilities": p, "confidence": max(probs)}}

    sure = "5a7e" * 8  # 32 characters, as document ids are: the table must not cut it
    docs = [doc(sure, (0.02, 0.96, 0.02), "flat quarter"), doc("unsure", (0.34, 0.33, 0.33), "mixed signals"),
            doc("labelled", (0.33, 0.34, 0.33), "already done"), doc("mid", (0.2, 0.6, 0.2), "some doubt")]
    with clients.elasticsearch(settings) as es:
        helpers.bulk(es, ({"_index": settings.index("docs"), "_id": d["id"], "_source": d} for d in docs),
                     refresh="wait_for")
        es.index(index=settings.index("labels"), id="x", refresh="wait_for", document=LabelRecord(
            doc_id="labelled", text="already done", label="neutral", labeled_at=utc_now()).model_dump(mode="json"))

    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await client.get("/review")).status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/review?limit=0", headers=auth)).status == 400
        resp = await client.get("/review?limit=2", headers=auth)
        assert resp.status == 200
        items = (await resp.json())["items"]
    assert [i["doc_id"] for i in items] == ["unsure", "mid"]
    assert items[0]["uncertainty"] > items[1]["uncertainty"] and items[0]["text"] == "mixed signals"

    result = CliRunner().invoke(app, ["labels", "review", "--json", "--limit", "5"], env=env_of(settings))
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [i["doc_id"] for i in lines] == ["unsure", "mid", sure]
    table = CliRunner().invoke(app, ["labels", "review", "--limit", "5"], env=env_of(settings) | {"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert sure in table.stdout and "mixed signals" in table.stdout


async def _raw_request(client: TestClient, request: bytes) -> bytes:
    import asyncio

    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


async def test_the_api_survives_what_callers_send_without_growing_its_metrics(label_settings) -> None:
    import asyncio

    from retrain.labels_http import METRIC_KEY, create_app

    app = create_app(label_settings.model_copy(update={"label_max_bytes": 200_000, "label_max_items": 1500}))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(app)) as client:
        # Paths of the caller's choosing are one metric series, not one each.
        for n in range(20):
            assert (await client.get(f"/junk-{n}")).status == 401
        series = {s.labels["endpoint"] for metric in app[METRIC_KEY].collect() for s in metric.samples}
        assert series == {"unmatched"}

        # A header that is not UTF-8 is a wrong token, not a server error.
        answer = await _raw_request(client, b"GET /review HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
                                            b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401")

        assert (await client.get("/review?limit=%C2%B2", headers=auth)).status == 400  # "²" passes isdigit()

        # A body that arrives in pieces is read whole (one read returned what had arrived so far).
        labels = [{"text": f"Quarterly sales fell {n} percent", "label": "negative"} for n in range(1500)]
        body = orjson.dumps(labels)
        assert len(body) > 65536

        async def in_pieces():
            for start in range(0, len(body), 16384):
                yield body[start:start + 16384]
                await asyncio.sleep(0.01)

        resp = await client.post("/labels", data=in_pieces(), headers=auth | {"Content-Type": "application/json"})
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["accepted"] == 1500

        async def too_much():
            for _ in range(20):
                yield b" " * 16384  # 320 kB, chunked: no length to refuse up front

        assert (await client.post("/labels", data=too_much(), headers=auth)).status == 413
