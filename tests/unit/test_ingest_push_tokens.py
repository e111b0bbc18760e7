"""Push tokens bound to source names: the tokens file, and the endpoint (a real local server) refusing a document
whose source its token may not write, since the document's id derives from that source."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from finsent.cli import app as cli
from finsent.schemas import document_id
from finsent.settings import load_settings
from ingest.pipeline import Pipeline
from ingest.push import ensure_token, make_app
from ingest.inbound import to_item
from ingest.items import SourceItem
from ingest.push_tokens import PushAuth, PushTokensError, Sender, parse_tokens, read_tokens
from ingest.sources.rss import parse_feed
from tests.unit.test_ingest_pipeline import started_pipeline
from tests.unit.test_ingest_push import serving

SHARED, ACME, BRIDGE = "shared-token-0123456789", "acme-token-0123456789", "bridge-token-0123456789"
FEED = "https://news.example.com/feed.xml"
RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>
<item><guid>https://news.example.com/a</guid><title>Acme shares jump</title><link>https://news.example.com/a</link>
<description>Acme shares jump after record sales</description></item></channel></rss>"""


def tokens_file(tmp_path: Path, text: str | None = None, mode: int = 0o600) -> Path:
    path = tmp_path / "push-tokens"
    path.write_text(text if text is not None else
                    f"# senders\nacme: {ACME} push:acme push:acme-*\n\nbridge {BRIDGE} *\n")
    path.chmod(mode)
    return path


def settings(tmp_path: Path, **update):
    if "push_tokens_file" not in update:
        update["push_tokens_file"] = tokens_file(tmp_path)
    return load_settings().model_copy(update={"push_token": SecretStr(SHARED), "push_rate_limit": 0,
                                              "state_dir": tmp_path / "state"} | update)


@pytest.fixture
def pipeline(tmp_path):
    with started_pipeline(tmp_path) as pipe:
        yield pipe


async def push(client: TestClient, token: str, documents) -> tuple[int, dict]:
    answer = await client.post("/documents", json=documents, headers={"Authorization": f"Bearer {token}"})
    return answer.status, await answer.json()


def test_a_tokens_file_names_each_sender_s_sources_and_its_errors_say_file_and_line(tmp_path) -> None:
    assert read_tokens(tokens_file(tmp_path)) == {"acme": (ACME.encode(), ("push:acme", "push:acme-*")),
                                                  "bridge": (BRIDGE.encode(), ("*",))}
    for text, problem in [(f"acme: {ACME}\n", "f:1: expected 'sender: token source…'"),
                          (f"acme: {ACME} a\nacme: {BRIDGE} b\n", "f:2: a second line for 'acme'"),
                          ("acme: short push:acme\n", "f:1: 'acme''s token is shorter than 16 characters"),
                          (f"acme: {ACME} a\n\nbob: {ACME} b\n", "f:3: 'bob' has the token of line 1"),
                          (f"acme: {ACME} push:a*cme\n", "f:1: 'acme''s source 1 'push:a*cme' has a '*' before"),
                          (f"acme: {ACME} a push:acme\u200b\n", "f:1: 'acme''s source 2 'push:acme\\u200b' is not as"),
                          (f"acme: {ACME} {'s' * 65}\n", "f:1: 'acme''s source 1 is over 64 characters")]:
        with pytest.raises(PushTokensError) as caught:
            parse_tokens(text, "f")
        assert str(caught.value).startswith(problem) and ACME not in str(caught.value)
    with pytest.raises(PushTokensError, match="every user of this machine may read it"):
        read_tokens(tokens_file(tmp_path, mode=0o644))
    with pytest.raises(PushTokensError, match="FINSENT_PUSH_TOKEN is also a sender's token"):
        PushAuth.from_settings(settings(tmp_path, push_token=SecretStr(ACME)))


def test_a_tokens_file_saved_with_a_byte_order_mark_and_crlf_lines_reads_as_without(tmp_path) -> None:
    # A Windows editor's file: the mark made the first line "\ufeff# senders", not a comment (an error), and
    # before a sender's line it became part of the sender's name.
    for first in ("# senders\r\n", ""):
        path = tokens_file(tmp_path, "")
        path.write_bytes(f"\ufeff{first}acme: {ACME} push:acme\r\nbridge {BRIDGE} *\r\n".encode())
        assert read_tokens(path) == {"acme": (ACME.encode(), ("push:acme",)), "bridge": (BRIDGE.encode(), ("*",))}


@pytest.mark.parametrize("source", ["ｒｓｓ:news.example.com", "RSS\uff1anews.example.com", "ＲＥＤＤＩＴ",
                                    "ｐｕｓｈ:acme", "Push:ＡＣＭＥ-eu", "\u00a0rss:news.example.com ", "r\u00adss:x"])
def test_the_shared_token_s_refusals_see_through_width_and_case(source: str) -> None:
    # Fullwidth letters (and colon) look like the feed's name on the dashboard; NFKC folds them, as case is.
    auth = PushAuth(shared=SHARED.encode(), senders={"acme": (ACME.encode(), ("push:acme", "push:acme-*"))})
    item = to_item({"text": "Acme files for bankruptcy", "source": source}, default_source="push", where="document")
    assert auth.refusal(Sender(None), [item]).startswith("document: the shared token (FINSENT_PUSH_TOKEN) cannot")


@pytest.mark.parametrize("source, odd", [
    ("r\u0435ddit", "CYRILLIC SMALL LETTER IE"),  # Latin and Cyrillic mixed
    ("r\u0455s:news.example.com", "CYRILLIC SMALL LETTER DZE"),  # a feed's prefix
    ("\u0430\u0440\u0456:news", "CYRILLIC SMALL LETTER A"),  # all Cyrillic: one script is no safeguard
    ("\u0440\u0435\u0440\u04cf\u0430\u0443", "CYRILLIC SMALL LETTER ER"),  # "replay"
    ("push:\u0430cme", "CYRILLIC SMALL LETTER A"),  # a sender's name
    ("st\u03bfcktwits", "GREEK SMALL LETTER OMICRON"),
    ("rss;news.example.com", "SEMICOLON"),  # a colon at a glance
    ("red\u200ddit", "ZERO WIDTH JOINER"),  # the one format character clean_text keeps
])
def test_the_shared_token_writes_no_look_alike_of_another_script(source: str, odd: str) -> None:
    # Each passed the folded comparison and showed on the dashboard, alerts and Kibana as Reddit's, a feed's or
    # acme's documents.
    auth = PushAuth(shared=SHARED.encode(), senders={"acme": (ACME.encode(), ("push:acme", "push:acme-*"))})
    item = to_item({"text": "Acme files", "source": source}, default_source="push", where="documents[2]")
    ch = unicodedata.lookup(odd)
    assert auth.refusal(Sender(None), [item]) == (
        f"documents[2]: the shared token (FINSENT_PUSH_TOKEN) cannot write source {source!r}: its {ch!r} "
        f"(U+{ord(ch):04X} {odd}) is not an ASCII letter, digit, space or one of '-._:/@', the characters it writes "
        "(a look-alike of another source's name would pass for it on the dashboard). A sender's token that lists it "
        "can (FINSENT_PUSH_TOKENS_FILE)")


@pytest.mark.parametrize("source, read_as", [
    ("reddit.", "'reddit', ingest's own"), (":Reddit", "'reddit', ingest's own"),
    ("reddit:wsb", "'reddit', ingest's own"), ("stocktwits:", "'stocktwits', ingest's own"),
    ("replay/", "'replay', ingest's own"), ("rss :news.example.com", "'rss:*', ingest's own"),
    (":rss:news.example.com", "'rss:*', ingest's own"), ("RSS.news.example.com", "'rss:*', ingest's own"),
    ("rss  news.example.com", "'rss:*', ingest's own"), ("api :newsapi", "'api:*', ingest's own"),
    ("Api/newsapi", "'api:*', ingest's own"),
    ("push:acme.", "a source a sender's own token has"), ("push.acme", "a source a sender's own token has"),
    ("push acme", "a source a sender's own token has"), ("push:acme:eu", "a source a sender's own token has"),
    ("push:zed-eu", "a source a sender's own token has"), ("@push_zed", "a source a sender's own token has"),
])
def test_the_shared_token_writes_no_name_that_reads_as_one_it_may_not_write(source: str, read_as: str) -> None:
    # Each was a 202 under an id and a dedup scope of its own, and showed on the dashboard and in Kibana as a source
    # of Reddit's, a feed's, an API's or a sender's beside theirs: a reader goes by the words, not the separators.
    auth = PushAuth(shared=SHARED.encode(), senders={"acme": (ACME.encode(), ("push:acme", "push:acme-*")),
                                                     "zed": (BRIDGE.encode(), ("push:zed",))})
    item = to_item({"text": "Acme files", "source": source}, default_source="push", where="documents[1]")
    shown = " ".join(source.split())  # as the normaliser would store it
    assert auth.refusal(Sender(None), [item]).startswith(
        f"documents[1]: the shared token (FINSENT_PUSH_TOKEN) cannot write source {shown!r}: it reads as {read_as}")
    # Names of other words stay the shared token's: a word that only begins like a protected name's, a feed prefix's
    # word alone, and the name a document without a source gets.
    for kept in ("redditor", "rss", "rss.", "rsshub:x", "apiary", "push:acmeco", "push:zedd", "push", "wire",
                 "Desk FX/london@bank_2"):
        assert auth.refusal(Sender(None), [to_item({"text": "Acme", "source": kept}, default_source="push",
                                                         where="d")]) is None, kept


def test_a_sender_s_names_are_judged_as_the_normaliser_stores_them(tmp_path) -> None:
    # What is checked is what the id is made of: clean_text's result, exact. A blank source takes no id (the
    # normaliser rejects it), and a missing one is "push", which the sender must have.
    auth = PushAuth(shared=None, senders={"acme": (ACME.encode(), ("push:acme",))})
    acme = Sender("acme", ("push:acme",))

    def refused(**fields) -> str | None:
        return auth.refusal(acme, [to_item({"text": "Acme beats"} | fields, default_source="push", where="d")])

    assert refused(source=" push:acme\u200b ") is None and refused(source=" \u200b") is None
    assert "source 'push' (given when a document names none)" in refused()
    assert "source 'ｐｕｓｈ:acme'" in refused(source="ｐｕｓｈ:acme") and "source 'Push:acme'" in refused(source="Push:acme")


async def test_the_shared_token_cannot_take_a_feed_entry_s_id(tmp_path, pipeline: Pipeline) -> None:
    # The probe of RELIABILITY.md: a push under the feed's name and entry id used to get the entry's id (202),
    # which made the feed's own entry a duplicate when it came.
    entry = parse_feed(RSS, FEED, "rss:news.example.com").items[0]
    async with serving(make_app(pipeline, settings(tmp_path, push_tokens_file=None))) as client:
        forged = {"text": "Acme files for bankruptcy", "source": entry.source, "source_id": entry.source_id}
        status, body = await push(client, SHARED, forged)
        assert status == 403 and body["error"].startswith("document: the shared token (FINSENT_PUSH_TOKEN) cannot "
                                                          "write source 'rss:news.example.com'")
        # Neither invisible characters (the normaliser removes them) nor capitals get around it.
        for source in ("rss:news.example.com\u200b", "RSS:News.Example.com", "reddit", "api:newsapi"):
            assert (await push(client, SHARED, forged | {"source": source}))[0] == 403, source
        assert pipeline.sink.sent == []
        assert pipeline.metrics.value("finsent_ingest_errors_total", reason="forbidden_source") == 5
        assert pipeline.process("rss:news.example.com", [entry]).produced == 1  # the feed's entry is news
        # The shared token keeps every other source of plain ASCII names, as before.
        status, body = await push(client, SHARED, [{"text": "Acme beats", "source": source, "source_id": "1"}
                                                   for source in ("wire", "push:acme-eu", "Desk FX/london@bank_2")])
        assert status == 202 and body["accepted"] == 3


async def test_no_push_sender_but_one_given_any_source_takes_ids_through_the_source_url(tmp_path,
                                                                                         pipeline: Pipeline) -> None:
    # Source "url" with a link as its source_id hashes to the id of a document known by that link alone: the shared
    # token took an API article's id that way (202), hiding the article, which then came as a duplicate.
    link = "https://news.example.com/acme-record-sales"
    article = SourceItem(source="api:newsapi", text="Acme shares jump after record sales", url=link)
    path = tokens_file(tmp_path, f"acme: {ACME} url push:acme\nbridge {BRIDGE} *\n")
    async with serving(make_app(pipeline, settings(tmp_path, push_tokens_file=path))) as client:
        forged = {"text": "Acme files for bankruptcy", "source": "url", "source_id": link}
        for token, source in ((SHARED, "url"), (SHARED, "URL"), (ACME, "url")):
            status, body = await push(client, token, forged | {"source": source})
            assert status == 403 and "cannot be pushed" in body["error"], (token, source)
        assert pipeline.sink.sent == []
        assert pipeline.process("api:newsapi", [article]).produced == 1  # the article is news
        assert (await push(client, BRIDGE, forged))[0] == 202  # a trusted bridge may replay such documents
    assert document_id("url", link) == document_id("api:newsapi", None, link)  # why: the same id


async def test_a_look_alike_source_is_refused_whole_and_a_sender_that_lists_it_writes_it(tmp_path,
                                                                                         pipeline: Pipeline) -> None:
    path = tokens_file(tmp_path, f"zurich: {ACME} push:z\u00fcrich\n")
    async with serving(make_app(pipeline, settings(tmp_path, push_tokens_file=path))) as client:
        documents = [{"text": "Acme beats", "source": "wire", "source_id": "1"},
                     {"text": "Acme files for bankruptcy", "source": "r\u0435ddit", "source_id": "2"}]
        status, body = await push(client, SHARED, documents)
        assert status == 403 and body["error"].startswith("documents[1]: the shared token (FINSENT_PUSH_TOKEN) cannot "
                                                          "write source 'r\u0435ddit': its '\u0435' (U+0435")
        assert pipeline.sink.sent == []  # nothing of the batch
        assert pipeline.metrics.value("finsent_ingest_errors_total", reason="forbidden_source") == 1
        assert (await push(client, SHARED, {"text": "Acme beats", "source": "push:z\u00fcrich"}))[0] == 403
        status, body = await push(client, ACME, {"text": "Acme beats", "source": "push:z\u00fcrich",
                                                 "source_id": "3"})
        assert status == 202 and [d.source for d in pipeline.sink.sent] == ["push:z\u00fcrich"]


async def test_a_name_that_reads_as_a_feed_s_or_a_sender_s_is_refused_whole(tmp_path, pipeline: Pipeline) -> None:
    # The probe: 'reddit.', 'rss :news.example.com' and 'push.acme' were accepted from the shared token (202), each
    # indexed under that name beside the source it reads as.
    async with serving(make_app(pipeline, settings(tmp_path))) as client:
        for n, source in enumerate(("reddit.", "rss :news.example.com", "push.acme")):
            documents = [{"text": "Acme beats", "source": "wire", "source_id": f"w{n}"},
                         {"text": "Acme files for bankruptcy", "source": source, "source_id": str(n)}]
            status, body = await push(client, SHARED, documents)
            assert status == 403 and body["error"].startswith(
                f"documents[1]: the shared token (FINSENT_PUSH_TOKEN) cannot write source {source!r}: it reads as")
            assert "Names are compared by their words" in body["error"] and ACME not in body["error"]
        assert pipeline.sink.sent == []
        assert pipeline.metrics.value("finsent_ingest_errors_total", reason="forbidden_source") == 3
        # The sender whose names they read as is not held to the rule: its own line says what it writes.
        assert (await push(client, ACME, {"text": "Acme beats", "source": "push:acme-eu.", "source_id": "4"}))[0] == 202


async def test_a_sender_s_token_writes_its_own_sources_only_and_refuses_the_batch_whole(tmp_path,
                                                                                        pipeline: Pipeline) -> None:
    async with serving(make_app(pipeline, settings(tmp_path))) as client:
        def doc(source_id: str, **fields) -> dict:
            return {"text": f"Acme shares rise, story {source_id}", "source_id": source_id} | fields

        status, body = await push(client, ACME, [doc("1", source="push:acme"), doc("2", source="push:acme-eu")])
        assert status == 202 and body["accepted"] == 2
        status, body = await push(client, ACME, [doc("3", source="push:acme"), doc("4", source="wire")])
        assert status == 403 and body["error"] == ("documents[1]: source 'wire' is not one that sender 'acme' may "
                                                   "write (push:acme, push:acme-*; FINSENT_PUSH_TOKENS_FILE)")
        status, body = await push(client, ACME, doc("5"))
        assert status == 403 and "source 'push' (given when a document names none)" in body["error"]
        assert [d.source_id for d in pipeline.sink.sent] == ["1", "2"]  # nothing of a refused batch
        # The shared token cannot write a sender's names either; a sender given '*' writes any source.
        status, body = await push(client, SHARED, doc("6", source="Push:Acme-EU"))
        assert status == 403 and "a source a sender's own token has" in body["error"] and ACME not in body["error"]
        assert (await push(client, BRIDGE, doc("7", source="rss:news.example.com")))[0] == 202
        assert (await push(client, "not-a-token-at-all", doc("8", source="push:acme")))[0] == 401


async def test_a_tokens_file_alone_is_the_only_way_in(tmp_path, pipeline: Pipeline) -> None:
    only_file = ensure_token(settings(tmp_path, push_token=None))
    assert only_file.push_token is None and not (tmp_path / "state" / "ingest" / "push-token").exists()
    async with serving(make_app(pipeline, only_file)) as client:
        assert (await push(client, ACME, {"text": "Acme beats", "source": "push:acme", "source_id": "1"}))[0] == 202
        assert (await push(client, SHARED, {"text": "Acme beats", "source": "wire", "source_id": "2"}))[0] == 401


def test_ingest_serve_checks_the_tokens_file_before_connecting_to_kafka(tmp_path, monkeypatch) -> None:
    import ingest.cli

    def no_kafka(*_, **__):
        raise AssertionError("connected to Kafka before the tokens file was checked")

    monkeypatch.setattr(ingest.cli, "_start", no_kafka)
    readable = tokens_file(tmp_path, mode=0o644)
    result = CliRunner().invoke(cli, ["ingest", "serve"], env={"FINSENT_PUSH_TOKENS_FILE": str(readable),
                                                              "FINSENT_STATE_DIR": str(tmp_path / "state")})
    assert result.exit_code == 1, result.output
    assert f"{readable}: every user of this machine may read it" in result.output and ACME not in result.output


def test_a_blank_tokens_file_setting_is_no_file(monkeypatch) -> None:
    monkeypatch.setenv("FINSENT_PUSH_TOKENS_FILE", " ")
    assert load_settings().push_tokens_file is None  # not the folder ".", and the endpoint generates its token


def test_ingest_serve_required_to_have_a_token_refuses_to_start_without_one(tmp_path, monkeypatch) -> None:
    # docker-compose.yml passes --require-token: a deployment with neither setting stops there, where before compose
    # refused to start without FINSENT_PUSH_TOKEN, even beside a tokens file.
    import ingest.cli

    def no_kafka(*_, **__):
        raise AssertionError("connected to Kafka without a push token")

    monkeypatch.setattr(ingest.cli, "_start", no_kafka)
    state = tmp_path / "state"
    result = CliRunner().invoke(cli, ["ingest", "serve", "--require-token"], env={
        "FINSENT_PUSH_TOKEN": "", "FINSENT_PUSH_TOKENS_FILE": "", "FINSENT_STATE_DIR": str(state)})
    assert result.exit_code == 1, result.output
    assert "neither FINSENT_PUSH_TOKEN nor FINSENT_PUSH_TOKENS_FILE is set" in result.output
    assert not (state / "ingest" / "push-token").exists()  # no token generated


STORY = ("Acme shares jumped eleven percent on Tuesday after the maker of industrial robots reported quarterly revenue "
         "well above analyst estimates and raised its outlook for the year")


async def test_a_sender_s_link_or_text_neither_hides_nor_replaces_a_feed_s_document(tmp_path,
                                                                                    pipeline: Pipeline) -> None:
    # The probe of RELIABILITY.md: acme, confined to its own sources, pushes before the feeds are polled another text
    # with the RSS entry's link, a copy of a wire story, and a text with an API article's link and no source_id (whose
    # id was then the link's alone, whatever the source).
    entry = parse_feed(RSS, FEED, "rss:news.example.com").items[0]
    wire = SourceItem(source="rss:wire.example.com", source_id="w1", text=STORY, url="https://wire.example.com/1")
    article = SourceItem(source="api:newsapi", text="Acme shares jump after record sales", url="https://x.example/a")
    async with serving(make_app(pipeline, settings(tmp_path))) as client:
        status, body = await push(client, ACME, [
            {"text": "Acme files for bankruptcy", "source": "push:acme", "source_id": "1", "url": entry.url},
            {"text": STORY + " (wire)", "source": "push:acme", "source_id": "2"},
            {"text": "Acme files for bankruptcy, sources say", "source": "push:acme", "url": article.url}])
        assert status == 202 and body["accepted"] == 3
        for item in (entry, wire, article):
            assert pipeline.process(item.source, [item]).produced == 1, item.source
        assert body["ids"][2] != pipeline.sink.sent[-1].id  # the index keeps both documents
        # acme's own copies are still duplicates, and ingest's own documents make pushed copies duplicates.
        status, body = await push(client, ACME, [
            {"text": "Acme files, again", "source": "push:acme-eu", "source_id": "3", "url": entry.url + "?utm_x=1"},
            {"text": STORY + " (Reuters)", "source": "push:acme", "source_id": "4"}])
        assert (status, body["accepted"], body["duplicates"]) == (202, 0, 2)
        status, body = await push(client, SHARED, {"text": "Acme files, again", "source": "wire", "url": entry.url})
        assert (status, body["accepted"], body["duplicates"]) == (202, 0, 1)
        # A sender that may write any source ('*', a bridge replaying feeds) dedups as ingest's own, ids included.
        relayed = {"text": "Acme shares jump", "source": "api:newsapi", "url": "https://x.example/b"}
        status, body = await push(client, BRIDGE, relayed)
        assert status == 202 and body["ids"] == [document_id("api:newsapi", None, "https://x.example/b")]
        assert pipeline.process("api:newsapi", [SourceItem(**relayed)]).duplicates == 1
    assert len(pipeline.sink.sent) == 7
