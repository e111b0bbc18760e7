"""Signature scheme and wire formats."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from urllib.parse import unquote

import orjson
import pytest

from alerts import signing
from alerts.payload import body_for, dashboard_url, idempotency_key, json_body, slack_body
from dashboards.kibana_objects import DASHBOARDS, MARKET_DASHBOARD, visualisations
from finsent.schemas import Alert, AlertDocument
from finsent.settings import Settings
from finsent.topology import MAPPINGS
from tests.conftest import ROOT

T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)


def test_signature_matches_the_documented_scheme():
    body = b'{"a":1}'
    header = signing.sign("s3cret", body, 1_700_000_000)
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signing.verify("s3cret", body, header, now=1_700_000_100) == 1_700_000_000


@pytest.mark.parametrize("mutate,message", [
    (lambda h, b: (h, b + b" "), "does not match"),
    (lambda h, b: (h.replace("v1=", "v1=0"), b), "does not match"),
    (lambda h, b: (None, b), "missing"),
    (lambda h, b: ("v1=abc", b), "malformed"),
    (lambda h, b: ("t=x,v1=abc", b), "not an integer"),
    (lambda h, b: ("t=1000,v1=\u00e9" + "0" * 63, b), "does not match"),  # compared as text: TypeError
    (lambda h, b: ("t=1000,v1=not-hex", b), "does not match"),
])
def test_verify_rejects(mutate, message):
    body = b'{"a":1}'
    header, body = mutate(signing.sign("k", body, 1000), body)
    with pytest.raises(signing.SignatureError, match=message):
        signing.verify("k", body, header, now=1000)


def test_verify_rejects_stale_and_wrong_secret_but_accepts_rotation():
    body = b"x"
    header = signing.sign("new", body, 1000)
    with pytest.raises(signing.SignatureError, match="tolerance"):
        signing.verify("new", body, header, now=1000 + 301)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify("old", body, header, now=1000)
    rotated = header + ",v1=" + signing.compute("old", 1000, body)
    assert signing.verify("old", body, rotated, now=1000) == 1000
    assert signing.verify("new", body, header.upper().replace("T=", "t=").replace("V1=", "v1="), now=1000) == 1000


def test_idempotency_key_is_stable_and_distinct():
    key = idempotency_key("r", "AAPL", "15m", T0)
    assert key == idempotency_key("r", "AAPL", "15m", T0.astimezone())
    assert len({key, idempotency_key("r", "AAPL", "1h", T0), idempotency_key("r", "MSFT", "15m", T0),
                idempotency_key("q", "AAPL", "15m", T0), idempotency_key("r", None, None, T0)}) == 5
    # A published contract: receivers may store these keys.
    assert key == hashlib.sha256("r\x1fAAPL\x1f15m\x1f2025-03-03T14:00:00+00:00".encode()).hexdigest()[:40]


def alert(**kw):
    base = dict(idempotency_key="k" * 40, rule="shift", kind="sentiment_shift", ticker="AAPL", window="15m",
                window_start=T0, value=-0.5, baseline=0.1, threshold=3.0, message="AAPL fell <fast> & hard",
                documents=[AlertDocument(id="d1", title="Apple | falls", url="https://n/1", score=-0.9)],
                dashboard_url="https://kb/x", created_at=T0)
    return Alert(**(base | kw))


def test_json_body_is_the_alert_without_bookkeeping():
    body = orjson.loads(json_body(alert(attempts=3)))
    assert body["idempotency_key"] == "k" * 40 and body["documents"][0]["id"] == "d1"
    assert "status" not in body and "attempts" not in body
    assert json_body(alert(attempts=1)) == json_body(alert(attempts=5, status="failed"))  # same bytes every attempt


def test_slack_body_shape():
    body = orjson.loads(slack_body(alert()))
    assert body["text"].startswith("[finsent] shift · AAPL: AAPL fell")
    types = [b["type"] for b in body["blocks"]]
    assert types[0] == "header" and "actions" in types and types[-1] == "context"
    docs_block = next(b for b in body["blocks"] if b["type"] == "section" and "text" in b and "•" in b["text"]["text"])
    assert "<https://n/1|Apple / falls>" in docs_block["text"]["text"]
    assert body_for(alert(), "slack") == slack_body(alert())


def test_slack_body_keeps_a_documents_text_from_making_links_or_mentions():
    # A feed controls its links and titles: neither may close the link and ping the channel.
    hostile = "https://news.example/a>  <!channel> halt trading <https://phish.example/login|Bloomberg"
    docs = [AlertDocument(id="d1", title="<!here> Apple", url=hostile, score=-0.9)]
    body = orjson.loads(slack_body(alert(documents=docs, message="AAPL <!channel> fell")))
    texts = [body["text"]] + [b["text"]["text"] for b in body["blocks"] if b["type"] == "section" and "text" in b]
    assert not any("<!" in text for text in texts)
    line = next(text for text in texts if "•" in text)
    assert line.count("<") == 1 and line.count("|") == 1  # one link, one label
    assert "<https://news.example/a%3E%20%20%3C!channel%3E%20halt%20trading%20%3Chttps://phish" in line


def test_dashboard_url_template():
    url = dashboard_url("https://kb/{ticker}?w={window}&r={rule}&f={from}&x={unknown}", rule="r", ticker="AAPL",
                        window="1h", start=T0, end=None)
    assert url == f"https://kb/AAPL?w=1h&r=r&f={T0.isoformat()}&x="
    assert dashboard_url(None, rule="r", ticker=None, window=None, start=None, end=None) is None
    assert dashboard_url("https://kb/{", rule="r", ticker=None, window=None, start=None, end=None) == "https://kb/{"


def test_default_dashboard_link_filters_every_panel_and_needs_no_ticker():
    template = Settings.model_fields["alerts_dashboard_url"].default
    link = dashboard_url(template, rule="r", ticker="BRK.B", window="1h", start=T0, end=None)
    assert " " not in link
    query = unquote(re.search(r"query:'([^']*)'", link).group(1))
    fields = set(re.findall(r"(\w+):BRK\.B", query))
    panels = {lens.id: lens for lens in visualisations()}
    [market] = [d for d in DASHBOARDS if d[0] == MARKET_DASHBOARD]
    for lens_id, _, _ in market[3]:
        view = panels[lens_id].view
        assert fields & set(MAPPINGS[view]), f"{lens_id} ({view}) has none of {fields}: the panel goes blank"
    # Model and drift alerts have no ticker: no clause at all (KQL refuses "tickers:").
    bare = dashboard_url(template, rule="r", ticker=None, window=None, start=None, end=None)
    assert re.search(r"query:'([^']*)'", bare).group(1) == ""


def test_node_recipe_verifies_a_finsent_signature(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on this machine")
    doc = (ROOT / "alerts" / "WEBHOOKS.md").read_text()
    recipe = doc.split("```js\n", 1)[1].split("```", 1)[0]
    body = orjson.dumps({"message": "Ünïcode “quotes” 100%", "title": "Apple’s café"})
    (tmp_path / "body.json").write_bytes(body)
    now = int(time.time())
    cases = {"good": signing.sign("s3cret", body, now), "other secret": signing.sign("other", body, now),
             "stale": signing.sign("s3cret", body, now - 3600),
             "two signatures": f"{signing.sign('s3cret', body, now)},v1={'0' * 64}"}
    script = recipe + (
        "const fs = require('fs');\n"
        f"const cases = {orjson.dumps(cases).decode()};\n"
        "const body = fs.readFileSync(process.argv[2]);\n"
        "for (const [name, header] of Object.entries(cases))\n"
        "  console.log(name, verifyFinsent('s3cret', body, header));\n")
    (tmp_path / "verify.js").write_text(script)
    result = subprocess.run([node, str(tmp_path / "verify.js"), str(tmp_path / "body.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["good true", "other secret false", "stale false", "two signatures true"]
