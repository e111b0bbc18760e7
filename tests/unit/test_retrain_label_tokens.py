"""Per-annotator label tokens: the tokens file, who may label as whom, and the API and review page with them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from dashboards.review_mount import mount_review
from finsent.schemas import LabelRecord
from finsent.settings import load_settings
from retrain import review
from retrain.label_tokens import Caller, LabelAuth, LabelTokensError, parse_tokens, read_tokens
from retrain.labels_http import create_app
from tests.unit.label_api_fakes import use_fake_publisher

LEAD, BOB = "lead-token-0123456789", "bob-token-0123456789"


def tokens_file(tmp_path: Path, text: str = f"# annotators\nlead: {LEAD}\n\nbob {BOB}\n", mode: int = 0o600) -> Path:
    path = tmp_path / "label-tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


def settings(tmp_path: Path, **update):
    if "label_tokens_file" not in update:
        update["label_tokens_file"] = tokens_file(tmp_path)
    return load_settings().model_copy(update={"label_token": SecretStr("shared"), "label_rate_limit": 0,
                                              "trusted_annotators": "lead"} | update)


def test_a_tokens_file_names_each_annotator_and_its_errors_say_file_and_line(tmp_path) -> None:
    assert read_tokens(tokens_file(tmp_path)) == {"lead": LEAD.encode(), "bob": BOB.encode()}
    for text, problem in [(f"lead: {LEAD}\nbob\n", "f:2: expected 'annotator: token'"),
                          (f"lead: {LEAD}\n\nlead: {BOB}\n", "f:3: a second token for 'lead'"),
                          ("bob: short\n", "f:1: 'bob''s token is shorter than 16 characters"),
                          (f"lead: {LEAD}\nbob: {LEAD}\n", "f:2: 'bob' has the token of line 1")]:
        with pytest.raises(LabelTokensError) as caught:
            parse_tokens(text, "f")
        assert str(caught.value).startswith(problem) and LEAD not in str(caught.value)
    with pytest.raises(LabelTokensError, match="every user of this machine may read it"):
        read_tokens(tokens_file(tmp_path, mode=0o644))


def test_a_tokens_file_saved_with_a_byte_order_mark_reads_as_without(tmp_path) -> None:
    # A Windows editor's mark made the first annotator "\ufefflead", whom no label names.
    path = tokens_file(tmp_path)
    path.write_bytes(f"\ufefflead: {LEAD}\r\nbob {BOB}\r\n".encode())
    assert read_tokens(path) == {"lead": LEAD.encode(), "bob": BOB.encode()}


def test_a_token_labels_only_as_its_annotator_and_the_shared_one_never_as_a_named_one(tmp_path) -> None:
    auth = LabelAuth.from_settings(settings(tmp_path))

    def records(*annotators: str) -> list[LabelRecord]:
        return [LabelRecord(text="t", label="positive", annotator=a, labeled_at=datetime.now(UTC)) for a in annotators]

    assert auth.refusal(Caller("bob"), records("bob", "bob")) is None
    assert auth.refusal(Caller("bob"), records("bob", "lead")).startswith("labels[1]: annotator 'lead', but the "
                                                                          "token is that of 'bob'")
    assert auth.refusal(Caller(None), records("carol", "api")) is None
    for name in ("lead", "bob"):  # trusted, and one with a token of their own
        assert "the shared token (FINSENT_LABEL_TOKEN) cannot label as" in auth.refusal(Caller(None), records(name))
    with pytest.raises(LabelTokensError, match="FINSENT_LABEL_TOKEN is also an annotator's token"):
        LabelAuth.from_settings(settings(tmp_path, label_token=SecretStr(BOB)))


@pytest.fixture
def publisher(monkeypatch):
    fake = use_fake_publisher(monkeypatch)
    monkeypatch.setattr(review, "review_queue", lambda es, settings, limit: [])
    return fake


async def test_the_api_stamps_a_personal_token_s_annotator_and_keeps_trust_from_the_shared_token(
        tmp_path, publisher) -> None:
    async with TestClient(TestServer(create_app(settings(tmp_path)))) as client:
        async def post(token: str, **fields) -> tuple[int, dict]:
            answer = await client.post("/labels", json={"text": "Acme beats", "label": "positive", **fields},
                                       headers={"Authorization": f"Bearer {token}"})
            return answer.status, await answer.json()

        assert (await post("shared", annotator="lead"))[0] == 403
        assert (await post(BOB, annotator="lead"))[0] == 403
        assert publisher.published == []
        assert (await post(LEAD))[0] == 202 and (await post("shared", annotator="carol"))[0] == 202
        assert [r.annotator for r in publisher.published] == ["lead", "carol"]
        review_page = await client.get("/review", headers={"Authorization": f"Bearer {BOB}"})
        assert review_page.status == 200 and await review_page.json() == {"items": []}


def test_the_review_page_mounts_with_only_a_tokens_file_and_is_off_with_a_bad_one(tmp_path) -> None:
    assert mount_review(web.Application(), settings(tmp_path, label_token=None)) == "on"
    bad = settings(tmp_path, label_token=None, label_tokens_file=tokens_file(tmp_path, mode=0o644))
    assert mount_review(web.Application(), bad) == "off: FINSENT_LABEL_TOKENS_FILE cannot be used, the dashboard's " \
                                                   "log says why"


@pytest.mark.parametrize(("env", "problem"), [
    ({"FINSENT_LABEL_TOKEN": "", "FINSENT_LABEL_TOKENS_FILE": ""},
     "neither FINSENT_LABEL_TOKEN nor FINSENT_LABEL_TOKENS_FILE is set"),
    ({"FINSENT_LABEL_TOKEN": ""}, "every user of this machine may read it"),  # the file, given below, is 0644
], ids=["neither", "a tokens file it cannot use"])
def test_dashboards_serve_required_to_have_a_label_token_refuses_to_start_without_a_usable_one(tmp_path, monkeypatch,
                                                                                              env, problem) -> None:
    # docker-compose.yml passes --require-label-token: with neither setting, or a tokens file the labels API cannot
    # use, the dashboard would otherwise serve its review page with labelling off.
    from typer.testing import CliRunner

    import dashboards.web_app
    from finsent.cli import app

    def no_app(*_, **__):
        raise AssertionError("the dashboard was made (and Kafka connected to) without a usable label token")

    monkeypatch.setattr(dashboards.web_app, "create_app", no_app)
    env = {"FINSENT_LABEL_TOKENS_FILE": str(tokens_file(tmp_path, mode=0o644)), "FINSENT_STATE_DIR": str(tmp_path)} | env
    result = CliRunner().invoke(app, ["dashboards", "serve", "--require-label-token"], env=env)
    assert result.exit_code == 1, result.output
    assert problem in result.output and LEAD not in result.output


def test_dashboards_serve_required_to_have_a_label_token_starts_with_a_usable_tokens_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import dashboards.web_app
    from finsent.cli import app

    def made(*_, **__):
        raise ValueError("the dashboard was made")  # stands in for the start, which needs Kafka

    monkeypatch.setattr(dashboards.web_app, "create_app", made)
    env = {"FINSENT_LABEL_TOKEN": "", "FINSENT_LABEL_TOKENS_FILE": str(tokens_file(tmp_path)),
           "FINSENT_STATE_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["dashboards", "serve", "--require-label-token"], env=env)
    assert "the dashboard was made" in result.output, result.output
