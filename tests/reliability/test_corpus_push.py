"""The bad-input corpus against the real push endpoint (``finsent ingest serve``) and real Kafka.

Every generated or hand-written body gets exactly the answer the pure validation path
predicts: 202 when some document in it is valid, else a 4xx whose JSON says why; never a
5xx, and the process stays up. Every document a 202 acknowledged is on ``<prefix>.raw``
(nothing lost, nothing produced twice). Also: the rate limit (429 + Retry-After) and the
size limit of the push and labels endpoints.
"""

from __future__ import annotations

from collections import Counter

import httpx
import orjson
import pytest
from hypothesis import given

from finsent.settings import Settings
from ingest.inbound import to_item
from ingest.items import Rejected
from ingest.normalise import Normaliser
from ingest.push_tokens import PushAuth, Sender
from ingest.tickers import TickerDictionary, TickerExtractor
from tests.integration.stream_harness import read_topic
from tests.reliability.bad_input import case_bytes, corpus_settings, load_cases, push_bodies
from tests.reliability.figures import record
from tests.reliability.processes import Proc, env_for, free_port

pytestmark = pytest.mark.integration

TOKEN = "corpus-push-token-5f0c"
MAX_BYTES = 65_536
AUTH = {"valid": f"Bearer {TOKEN}", "wrong": "Bearer not-the-token", "prefix": f"Bearer {TOKEN[:8]}",
        "basic": f"Basic {TOKEN}", "unicode": "Bearer t\u00f6ken\u2603".encode()}
_NORMALISER = Normaliser(TickerExtractor(TickerDictionary.load(None)))
_SHARED_ONLY = PushAuth(shared=TOKEN.encode(), senders={})


def expected_status(body: bytes) -> int:
    """What the push endpoint must answer, from the pure validation path (see ingest/push.py)."""
    if len(body) > MAX_BYTES:
        return 413
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400
    if isinstance(payload, dict) and isinstance(payload.get("documents"), list):
        documents = payload["documents"]
    elif isinstance(payload, list):
        documents = payload
    else:
        documents = [payload]
    if len(documents) > Settings.model_fields["push_max_documents"].default:
        return 413
    items = []
    for raw in documents:
        try:
            items.append(to_item(raw, default_source="push", where="document"))
        except Rejected:
            continue
    if _SHARED_ONLY.refusal(Sender(None), items):  # a source of ingest's own feeds (ingest.push_tokens)
        return 403
    for item in items:
        try:
            _NORMALISER.normalise(item)
            return 202
        except Rejected:
            continue
    return 400


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter = Counter()
        self.accepted = 0
        self.ids: set[str] = set()
        self.cases = 0


@pytest.fixture(scope="module")
def push_server(services, tmp_path_factory):
    import uuid

    from finsent.services import manager

    tag = "t" + uuid.uuid4().hex[:10]
    settings = services.model_copy(update={"topic_prefix": tag, "index_prefix": tag})
    manager.init(settings, echo=lambda m: None)
    tmp = tmp_path_factory.mktemp("push-corpus")
    port = free_port()
    proc = Proc(["ingest", "serve", "--port", str(port)],
                env_for(settings, tmp / "state", FINSENT_PUSH_TOKEN=TOKEN, FINSENT_PUSH_MAX_BYTES=MAX_BYTES,
                        FINSENT_PUSH_RATE_LIMIT=0, FINSENT_LOG_LEVEL="WARNING"), tmp / "serve.log").start()
    tally = Tally()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield settings, proc, client, tally
        assert proc.alive, proc.tail()
        assert proc.terminate() == 0, proc.tail()  # SIGTERM: flushes the producer, exits 0
        on_kafka = [orjson.loads(r.value)["id"] for r in read_topic(settings, "raw", tally.accepted, timeout=60)]
        lost, doubled = tally.ids - set(on_kafka), len(on_kafka) - len(set(on_kafka))
        record("corpus.push", cases=tally.cases, statuses={str(k): v for k, v in tally.statuses.items()}, accepted_documents=tally.accepted,
               on_kafka=len(on_kafka), lost=len(lost), doubled=doubled)
        assert len(on_kafka) == tally.accepted and not lost and doubled == 0
    finally:
        proc.ensure_stopped()
        manager.remove_prefixed(settings)


def post(client: httpx.Client, tally: Tally, body: bytes, *, auth: str = "valid", method: str = "POST",
         path: str = "/documents") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if auth != "none":
        headers["Authorization"] = AUTH[auth]
    answer = client.request(method, path, content=body, headers=headers)
    tally.cases += 1
    tally.statuses[answer.status_code] += 1
    assert answer.status_code < 500, (answer.status_code, answer.text, body[:300])
    if answer.status_code in (400, 401, 403, 413):
        assert answer.json()["error"], answer.text  # a clear reason
    if answer.status_code == 202:
        got = answer.json()
        tally.accepted += got["accepted"]
        tally.ids.update(got["ids"])
    return answer


@pytest.mark.parametrize("case", load_cases("push"), ids=lambda c: c["name"])
def test_hand_written_cases(push_server, case):
    _, proc, client, tally = push_server
    answer = post(client, tally, case_bytes(case), auth=case.get("auth", "valid"), method=case.get("method", "POST"),
                  path=case.get("path", "/documents"))
    assert answer.status_code == case["expect"], (answer.status_code, answer.text[:500])
    if answer.status_code == 400:
        body = answer.json()
        assert body["error"] and ("rejected" not in body or all(r["detail"] for r in body["rejected"]))
    assert proc.alive


def test_generated_bodies(push_server):
    _, proc, client, tally = push_server

    @corpus_settings(900)
    @given(push_bodies)
    def check(body):
        answer = post(client, tally, body)
        assert answer.status_code == expected_status(body), (answer.status_code, answer.text[:500], body[:300])

    check()
    assert proc.alive, proc.tail()


def test_push_rate_limit_answers_429_with_retry_after(bootstrapped, tmp_path):
    port = free_port()
    proc = Proc(["ingest", "serve", "--port", str(port)],
                env_for(bootstrapped, tmp_path / "state", FINSENT_PUSH_TOKEN=TOKEN, FINSENT_PUSH_RATE_LIMIT=0.2,
                        FINSENT_PUSH_RATE_BURST=3), tmp_path / "serve.log").start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            doc = {"text": "Apple shares rise", "source": "rl", "source_id": "1"}
            answers = [client.post("/documents", json=doc, headers={"Authorization": f"Bearer {TOKEN}"})
                       for _ in range(3)]
            assert [a.status_code for a in answers] == [202, 202, 202]
            limited = client.post("/documents", json=doc, headers={"Authorization": f"Bearer {TOKEN}"})
            assert limited.status_code == 429 and "too many requests" in limited.json()["error"]
            assert 1 <= int(limited.headers["Retry-After"]) <= 5
            # Unauthenticated guessing is limited as well; health checks never are.
            assert client.post("/documents", json=doc).status_code == 429
            assert all(client.get("/healthz").status_code == 200 for _ in range(10))
        assert proc.terminate() == 0
    finally:
        proc.ensure_stopped()


def test_labels_api_token_size_and_rate_limits(bootstrapped, tmp_path):
    port = free_port()
    token = "corpus-label-token-77"
    proc = Proc(["labels", "serve", "--no-indexer", "--port", str(port)],
                env_for(bootstrapped, tmp_path / "state", FINSENT_LABEL_TOKEN=token, FINSENT_LABEL_MAX_BYTES=2048,
                        FINSENT_LABEL_RATE_LIMIT=0.2, FINSENT_LABEL_RATE_BURST=4), tmp_path / "labels.log").start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/metrics")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            auth = {"Authorization": f"Bearer {token}"}
            label = {"text": "Apple beats estimates", "label": "positive"}
            assert client.post("/labels", json=label).status_code == 401
            assert client.post("/labels", json=label, headers={"Authorization": "Bearer x"}).status_code == 401
            too_big = client.post("/labels", json={"text": "x" * 3000, "label": "positive"}, headers=auth)
            assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
            assert client.post("/labels", json=label, headers=auth).status_code == 202
            limited = client.post("/labels", json=label, headers=auth)
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
            assert client.get("/metrics").status_code == 200  # scrapes are never limited
        assert proc.terminate() == 0, proc.tail()
    finally:
        proc.ensure_stopped()
