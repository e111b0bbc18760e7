"""A rules file's values may name environment variables: a token stays out of the file, and `make up`'s rules
follow the receiver's port."""

from __future__ import annotations

import re

import pytest
import yaml

from alerts.env_refs import UnsetVariable, expand
from alerts.rules import RulesError, load_rules

ENV = {"SLACK_URL": "https://hooks.slack.com/services/T1/B2/secret", "EMPTY": ""}


def test_references_defaults_and_dollars_are_expanded_in_values_only():
    hook = {"url": "${SLACK_URL}", "headers": {"X": "a $$5 ${EMPTY:-fallback} ${UNSET:-} $${SLACK_URL}"}}
    raw = {"webhooks": {"${SLACK_URL}": hook}, "rules": [{"name": "r", "tickers": ["${MISSING:-AAPL}", 3]}]}
    assert expand(raw, ENV) == {
        "webhooks": {"${SLACK_URL}": {"url": ENV["SLACK_URL"], "headers": {"X": "a $5 fallback  ${SLACK_URL}"}}},
        "rules": [{"name": "r", "tickers": ["AAPL", 3]}],
    }


@pytest.mark.parametrize("name", ["NOPE", "EMPTY"])
def test_an_unset_variable_without_a_default_names_itself_and_where(name):
    with pytest.raises(UnsetVariable, match=rf"^rules\[0\]\.tickers\[1\]: \$\{{{name}\}} is unset or empty in the "
                                            rf"environment \(set it, or give a default: \$\{{{name}:-…\}}\)$"):
        expand({"rules": [{"tickers": ["AAPL", f"${{{name}}}"]}]}, ENV)


@pytest.mark.parametrize("text", ["${A:-${B}}", "${A-b}", "${1}", "${ A }", "x${"])
def test_a_dollar_brace_that_is_no_reference_is_an_error_not_text(text):
    with pytest.raises(UnsetVariable, match=r"^webhooks\.ops\.url: a \$\{ that is not \$\{NAME\} or"):
        expand({"webhooks": {"ops": {"url": text}}}, ENV)


def test_a_rules_file_reads_its_references_when_loaded(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text('webhooks:\n  chat: {url: "${SLACK_URL}", format: slack}\n'
                    "rules:\n  - {name: shift, kind: sentiment_shift, threshold: 3, min_count: 5}\n")
    assert load_rules(path, environ=ENV).webhooks["chat"].url == ENV["SLACK_URL"]
    with pytest.raises(RulesError, match=rf"^{re.escape(str(path))}: webhooks\.chat\.url: \$\{{SLACK_URL\}} is "):
        load_rules(path, environ={})


@pytest.mark.parametrize("hook,field", [
    ({"url": "${HOOK}"}, "field 'url': 'https://hooks..example.com/…' is not a URL"),
    ({"url": "https://user:${TOKEN}@example.com/x"}, None),  # valid: loads
    ({"url": "http://x/y", "headers": {"Authorization": "Bearer ${TOKEN}\r"}},
     "field 'headers': header 'Authorization': the value must be one line of printable ASCII; character 32 of 32 "
     "is '\\r'"),
    # a file-made secret ends in a newline, which `$` in a regular expression lets through
    ({"url": "http://x/y", "headers": {"Authorization": "Bearer ${TOKEN}\n"}}, "character 32 of 32 is '\\n'"),
    ({"url": "http://x/y", "headers": {"Authorization": "${TOKEN}\nX-Other: 1"}}, "character 25 of 35 is '\\n'"),
    # a user part that httpx or a careless split would show: a second @, or a / that makes it look like host:port
    ({"url": "https://user:SECRET@x@example.com:99999/y"}, "field 'url': 'https://…': port 99999"),
    ({"url": "https://user:SECRET/abc@example.com/y"}, "field 'url': 'https://…' is not a URL that can be posted"),
])
def test_a_token_read_from_the_environment_never_shows_in_an_error(tmp_path, hook, field):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"webhooks": {"ops": hook}, "rules": [{"name": "a", "kind": "drift"}]}))
    environ = {"HOOK": "https://hooks..example.com/services/T1/B2/SECRET", "TOKEN": "SECRET-0123456789abcdefg"}
    if field is None:
        url = load_rules(path, environ=environ).webhooks["ops"].url
        assert url == f"https://user:{environ['TOKEN']}@example.com/x"
        return
    with pytest.raises(RulesError) as err:
        load_rules(path, environ=environ)
    assert field in str(err.value) and "SECRET" not in str(err.value)


def test_make_up_s_rules_deliver_to_the_receiver_s_port_and_the_example_loads_without_its_token():
    local = "alerts/rules.local.yml"
    assert load_rules(local, environ={}).webhooks["local"].url == "http://127.0.0.1:8099/finsent"
    assert load_rules(local, environ={"FINSENT_RECEIVER_PORT": "9123"}).webhooks["local"].url == \
        "http://127.0.0.1:9123/finsent"
    example = load_rules("alerts/rules.example.yml", environ={"SLACK_WEBHOOK_URL": ENV["SLACK_URL"]})
    assert example.webhooks["slack"].url == ENV["SLACK_URL"]
    assert load_rules("alerts/rules.example.yml", environ={}).webhooks["slack"].url.endswith("/T000/B000/XXXXXXXX")
