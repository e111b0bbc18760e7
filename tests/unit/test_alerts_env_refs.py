"""A rules file's values may name environment variables: a token stays out of the file, and `make up`'s rules
follow the receiver's port."""

from __future__ import annotations

import pytest

from alerts.env_refs import UnsetVariable, expand
from alerts.rules import RulesError, load_rules

ENV = {"SLACK_URL": "https://hooks.slack.com/services/T1/B2/secret", "EMPTY": ""}


def test_references_defaults_and_dollars_are_expanded_in_values_only():
    hook = {"url": "${SLACK_URL}", "headers": {"X": "a $$5 ${EMPTY:-fallback} ${UNSET:-}"}}
    raw = {"webhooks": {"${SLACK_URL}": hook}, "rules": [{"name": "r", "tickers": ["${MISSING:-AAPL}", 3]}]}
    assert expand(raw, ENV) == {
        "webhooks": {"${SLACK_URL}": {"url": ENV["SLACK_URL"], "headers": {"X": "a $5 fallback "}}},
        "rules": [{"name": "r", "tickers": ["AAPL", 3]}],
    }


def test_an_unset_variable_without_a_default_names_itself_and_where():
    with pytest.raises(UnsetVariable, match=r"^rules\[0\]\.tickers\[1\]: \$\{NOPE\} is not set in the environment "
                                            r"\(set it, or give a default: \$\{NOPE:-…\}\)$"):
        expand({"rules": [{"tickers": ["AAPL", "${NOPE}"]}]}, ENV)


def test_a_rules_file_reads_its_references_when_loaded(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text('webhooks:\n  chat: {url: "${SLACK_URL}", format: slack}\n'
                    "rules:\n  - {name: shift, kind: sentiment_shift, threshold: 3, min_count: 5}\n")
    assert load_rules(path, environ=ENV).webhooks["chat"].url == ENV["SLACK_URL"]
    with pytest.raises(RulesError, match=rf"^{path}: webhooks\.chat\.url: \$\{{SLACK_URL\}} is not set"):
        load_rules(path, environ={})


def test_make_up_s_rules_deliver_to_the_receiver_s_port_and_the_example_loads_without_its_token():
    local = "alerts/rules.local.yml"
    assert load_rules(local, environ={}).webhooks["local"].url == "http://127.0.0.1:8099/finsent"
    assert load_rules(local, environ={"FINSENT_RECEIVER_PORT": "9123"}).webhooks["local"].url == \
        "http://127.0.0.1:9123/finsent"
    example = load_rules("alerts/rules.example.yml", environ={"SLACK_WEBHOOK_URL": ENV["SLACK_URL"]})
    assert example.webhooks["slack"].url == ENV["SLACK_URL"]
    assert load_rules("alerts/rules.example.yml", environ={}).webhooks["slack"].url.endswith("/T000/B000/XXXXXXXX")
