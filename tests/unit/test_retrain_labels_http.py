"""POST /labels against bodies too big to check in one go (tests/integration/test_retrain_labels.py has the
rest, against the real Kafka): a cap on labels, the validation off the event loop, a short answer."""

from __future__ import annotations

import threading

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from finsent.settings import load_settings
from retrain import labels_http
from retrain.labels_http import MAX_SHOWN, create_app
from tests.unit.label_api_fakes import use_fake_publisher

AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture
def publisher(monkeypatch):
    fake = use_fake_publisher(monkeypatch)
    return fake


def app(**settings):
    return create_app(load_settings().model_copy(update={"label_token": SecretStr("tok"), "label_rate_limit": 0,
                                                         **settings}))


def label(n: int, **fields) -> dict:
    return {"text": f"Acme story {n}", "label": "positive"} | fields


async def test_more_labels_than_the_limit_are_refused_whole(publisher) -> None:
    async with TestClient(TestServer(app(label_max_items=2))) as client:
        refused = await client.post("/labels", json=[label(n) for n in range(3)], headers=AUTH)
        assert refused.status == 413
        assert (await refused.json())["error"] == ("3 labels in one request, over the limit of 2 "
                                                   "(FINSENT_LABEL_MAX_ITEMS): send them in several requests")
        assert publisher.published == []
        ok = await client.post("/labels", json={"labels": [label(n) for n in range(2)]}, headers=AUTH)
        assert ok.status == 202 and (await ok.json())["accepted"] == 2


async def test_an_answer_lists_the_first_problems_and_counts_them_all(publisher) -> None:
    bad = [label(n, label="meh") for n in range(MAX_SHOWN + 5)] + [{"text": "x", **{"f" * 50 + str(n): 1
                                                                                  for n in range(500)}}]
    async with TestClient(TestServer(app())) as client:
        answer = await client.post("/labels", json=bad, headers=AUTH)
        body = await answer.json()
    assert answer.status == 400 and body["problem_count"] == MAX_SHOWN + 6
    assert len(body["problems"]) == MAX_SHOWN and body["problems"][0].startswith("labels[0]: label:")
    assert publisher.published == []


async def test_the_labels_are_validated_off_the_event_loop(publisher, monkeypatch) -> None:
    threads = []
    read_labels = labels_http.read_labels

    def recording(body, limit, annotator):
        threads.append(threading.current_thread())
        return read_labels(body, limit, annotator)

    monkeypatch.setattr(labels_http, "read_labels", recording)
    async with TestClient(TestServer(app())) as client:
        assert (await client.post("/labels", json=label(1), headers=AUTH)).status == 202
    assert threads and threads[0] is not threading.main_thread()


def test_one_long_problem_is_shortened() -> None:
    import orjson

    item = {"text": "x", "label": "positive", **{"f" * 50 + str(n): 1 for n in range(500)}}
    with pytest.raises(labels_http._Refused) as caught:
        labels_http.read_labels(orjson.dumps([item]), 10)
    [problem] = caught.value.body["problems"]
    assert len(problem) == labels_http.MAX_PROBLEM_CHARS and caught.value.body["problem_count"] == 1
