"""The rules file: valid files load, every mistake names the rule and the field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.rules import RulesError, load_rules, parse_rules
from finsent.durations import parse_duration
from finsent.cli import app

EXAMPLE = "alerts/rules.example.yml"


def test_example_rules_file_is_valid():
    rules = load_rules(EXAMPLE)
    kinds = {rule.kind for rule in rules.rules}
    assert kinds == {"sentiment_shift", "volume_spike", "negative_burst", "model", "drift"}
    burst = next(r for r in rules.rules if r.kind == "negative_burst")
    assert burst.within == timedelta(minutes=10)
    assert rules.webhooks["slack"].format == "slack"
    assert rules.warnings() == []  # its retries reach backoff_max before they give up


@pytest.mark.parametrize("text,expected", [
    ("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800), (90, 90), ("1.5m", 90),
])
def test_durations(text, expected):
    assert parse_duration(text).total_seconds() == expected


@pytest.mark.parametrize("bad", ["10 minutes", "-5s", True, "", None])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("rule,fragment", [
    ({"name": "shift", "kind": "sentiment_shift", "threshold": 0}, "rule 'shift' (rules[0]) field 'threshold'"),
    ({"name": "shift", "kind": "sentiment_shift", "threshold": 2, "direction": "sideways"},
     "rule 'shift' (rules[0]) field 'direction'"),
    ({"name": "burst", "kind": "negative_burst", "count": 3, "within": "soon"}, "rule 'burst' (rules[0]) field 'within'"),
    ({"name": "burst", "kind": "negative_burst", "count": 3}, "rule 'burst' (rules[0]) field 'within': Field required"),
    ({"name": "vol", "kind": "volume_spike", "threshold": 2, "windows": ["5 min"]}, "rule 'vol' (rules[0]) field 'windows.0'"),
    ({"name": "what", "kind": "sentiment"}, "rule 'what' (rules[0]) field 'kind'"),
    ({"name": "what", "type": "drift"}, "rule 'what' (rules[0]) field 'kind': missing; say which kind of rule it is "
                                        "(sentiment_shift, volume_spike, negative_burst, model, drift)"),
    ({"kind": "drift"}, "rule rules[0] field 'name'"),
    ({"name": "m", "kind": "model", "actions": ["delete"]}, "rule 'm' (rules[0]) field 'actions.0'"),
    ({"name": "d", "kind": "drift", "treshold": 1}, "rule 'd' (rules[0]) field 'treshold': Extra inputs"),
])
def test_bad_rule_names_rule_and_field(rule, fragment):
    with pytest.raises(RulesError) as err:
        parse_rules({"rules": [rule]}, "rules.yml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("rules.yml:")


def test_unknown_webhook_and_duplicate_name():
    with pytest.raises(RulesError, match=r"rule 'b' \(rules\[1\]\) field 'webhooks': unknown webhook 'pager'"):
        parse_rules({"webhooks": {"ops": {"url": "http://x/y"}},
                     "rules": [{"name": "a", "kind": "drift"}, {"name": "b", "kind": "drift", "webhooks": ["pager"]}]})
    with pytest.raises(RulesError, match=r"rule 'a' \(rules\[1\]\) field 'name': duplicate"):
        parse_rules({"rules": [{"name": "a", "kind": "drift"}, {"name": "a", "kind": "model"}]})


def test_bad_webhook_and_file_errors(tmp_path):
    with pytest.raises(RulesError, match=r"webhook 'ops' field 'url'"):
        parse_rules({"webhooks": {"ops": {"url": "ftp://x"}}, "rules": [{"name": "a", "kind": "drift"}]})
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("rules: [\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(broken)
    empty = tmp_path / "empty.yml"
    empty.write_text("rules: []\n")
    with pytest.raises(RulesError, match="field 'rules'"):
        load_rules(empty)


def test_default_webhooks_are_all(tmp_path):
    rules = parse_rules({"webhooks": {"b": {"url": "http://b/"}, "a": {"url": "http://a/"}},
                         "rules": [{"name": "d", "kind": "drift"}, {"name": "e", "kind": "drift", "webhooks": ["b"]}]})
    assert rules.webhooks_of(rules.rules[0]) == ["a", "b"]
    assert rules.webhooks_of(rules.rules[1]) == ["b"]


def test_cli_check(tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    ok = runner.invoke(app, ["alerts", "check", "--rules", EXAMPLE], env={"COLUMNS": "80"})
    assert ok.exit_code == 0, ok.output
    assert "rules ok" in ok.output
    assert max(len(line) for line in ok.output.splitlines()) <= 80
    for name in ("sentiment-shift", "big-caps-down", "negative-burst", "model-changes"):  # never cut
        assert f" {name} " in ok.output
    bad = tmp_path / "bad.yml"
    bad.write_text("rules:\n  - name: spike\n    kind: volume_spike\n    threshold: lots\n")
    result = runner.invoke(app, ["alerts", "check", "--rules", str(bad)])
    assert result.exit_code == 1
    assert "rule 'spike' (rules[0]) field 'threshold'" in result.output


@pytest.mark.parametrize("hook,fragment", [
    ({"url": "https://hooks..example.com/x"},
     "webhook 'ops' field 'url': 'https://hooks..example.com/…' is not a URL"),
    ({"url": "http://[::1/x"}, "webhook 'ops' field 'url': 'http://[::1/…' is not a URL"),
    ({"url": "http://" + "a" * 64 + ".example/x"}, "webhook 'ops' field 'url'"),
    ({"url": "http://127.0.0.1:70000/x"}, "webhook 'ops' field 'url': 'http://127.0.0.1:70000/…': port 70000"),
    ({"url": "http://x/y", "headers": {"X-Token": "café"}}, "webhook 'ops' field 'headers': header 'X-Token'"),
    ({"url": "http://x/y", "headers": {"X-Token": "a\r\nX-Evil: 1"}}, "webhook 'ops' field 'headers'"),
    ({"url": "http://x/y", "headers": {"X Token": "a"}}, "webhook 'ops' field 'headers': header name 'X Token'"),
])
def test_webhooks_httpx_cannot_send_to_are_refused(hook, fragment):
    with pytest.raises(RulesError) as err:
        parse_rules({"webhooks": {"ops": hook}, "rules": [{"name": "a", "kind": "drift"}]}, "f.yml")
    assert fragment in str(err.value) and str(err.value).startswith("f.yml:")


def test_cli_test_webhook_refuses_a_url_it_cannot_send_to():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["alerts", "test-webhook", "https://hooks..example.com/x"],
                                env={"FINSENT_ALERTS_WEBHOOK_SECRET": "s3cret"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "is not a URL that can be posted to" in result.output


def test_cli_test_webhook_sends_a_signed_alert_the_reference_receiver_verifies():
    from typer.testing import CliRunner

    from alerts.receiver import WebhookReceiver

    with WebhookReceiver("s3cret") as receiver:
        result = CliRunner().invoke(app, ["alerts", "test-webhook", receiver.url],
                                    env={"FINSENT_ALERTS_WEBHOOK_SECRET": "s3cret"})
    assert result.exit_code == 0, result.output
    assert f"{receiver.url.rpartition('/')[0]}/…: HTTP 200" in result.output  # the path may hold a token
    [delivered] = receiver.delivered  # signed with the secret, so verified
    assert delivered.json()["rule"] == "test-webhook"


def test_cli_test_webhook_shows_the_url_without_its_credentials_or_path():
    from typer.testing import CliRunner

    from alerts.receiver import WebhookReceiver

    env = {"FINSENT_ALERTS_WEBHOOK_SECRET": "s3cret"}
    with WebhookReceiver("s3cret") as receiver:
        host = receiver.url.split("://")[1].split("/")[0]
        typed = receiver.url.replace("http://", "http://ops:hunter2@") + "/services/T1/B2/path-t0ken?token=query-t0ken"
        sent = CliRunner().invoke(app, ["alerts", "test-webhook", typed], env=env)
    with WebhookReceiver("s3cret") as gone:
        closed = gone.url.replace("http://", "http://ops:hunter2@") + "/services/path-t0ken"
    failed = CliRunner().invoke(app, ["alerts", "test-webhook", closed], env=env)
    assert sent.exit_code == 0 and f"http://***@{host}/…: HTTP 200" in sent.output, sent.output
    assert failed.exit_code == 1 and "http://***@127.0.0.1:" in failed.output, failed.output
    for output in (sent.output, failed.output):
        assert "hunter2" not in output and "t0ken" not in output


def test_tickers_are_read_as_ingest_writes_them():
    rule = {"name": "vol", "kind": "volume_spike", "threshold": 2}
    parsed = parse_rules({"rules": [{**rule, "tickers": ["aapl", "BRK-B", "$msft", "AAPL"]}]})
    assert parsed.rules[0].tickers == ["AAPL", "BRK.B", "MSFT"]
    assert parsed.rules[0].matches_ticker("BRK.B")
    with pytest.raises(RulesError, match=r"rule 'vol' \(rules\[0\]\) field 'tickers': 'apple inc' is not a ticker"):
        parse_rules({"rules": [{**rule, "tickers": ["apple inc"]}]})


def test_windows_are_those_the_stream_emits(tmp_path):
    from typer.testing import CliRunner

    rule = {"name": "vol", "kind": "volume_spike", "threshold": 2}
    stream = "1m,15m,1h,1d"
    assert parse_rules({"rules": [{**rule, "windows": ["60m", "15m"]}]}, windows=stream).rules[0].windows == [
        "1h", "15m"]  # the stream calls it 1h
    assert parse_rules({"rules": [{**rule, "windows": ["60m"]}]}, windows="60m").rules[0].windows == ["60m"]
    with pytest.raises(RulesError, match=r"rule 'vol' \(rules\[0\]\) field 'windows': the stream emits no '5m' "
                                         r"windows \(FINSENT_WINDOWS: 1m, 15m, 1h, 1d\)"):
        parse_rules({"rules": [{**rule, "windows": ["5m"]}]}, windows=stream)
    bad = tmp_path / "bad.yml"
    bad.write_text("rules:\n  - {name: vol, kind: volume_spike, threshold: 2, windows: [15m]}\n")
    result = CliRunner().invoke(app, ["alerts", "check", "--rules", str(bad)], env={"FINSENT_WINDOWS": "1m,1h"})
    assert result.exit_code == 1
    assert "rule 'vol' (rules[0]) field 'windows': the stream emits no '15m' windows" in result.output


@pytest.mark.parametrize("value", [".inf", "99999999999d", "3000000d"])
def test_out_of_range_durations_name_rule_and_field(tmp_path, value):
    path = tmp_path / "f.yml"
    path.write_text(f"rules:\n  - {{name: a, kind: drift, cooldown: {value}}}\n")
    with pytest.raises(RulesError, match=rf"^{path}: invalid rules:\n  rule 'a' \(rules\[0\]\) field 'cooldown': "):
        load_rules(path)


def test_cli_test_webhook_sends_to_a_rules_file_webhook_with_its_own_secret(tmp_path):
    from typer.testing import CliRunner

    from alerts.receiver import WebhookReceiver

    own = "0123456789abcdef-ops"
    rules = tmp_path / "rules.yml"
    with WebhookReceiver(own) as receiver:
        rules.write_text(f"webhooks:\n  ops: {{url: '{receiver.url}', secret: '${{OPS_HOOK_SECRET}}'}}\n"
                         "rules: [{name: d, kind: drift}]\n")
        env = {"FINSENT_ALERTS_WEBHOOK_SECRET": "", "OPS_HOOK_SECRET": own}
        result = CliRunner().invoke(app, ["alerts", "test-webhook", "ops", "--rules", str(rules)], env=env)
        unknown = CliRunner().invoke(app, ["alerts", "test-webhook", "pager", "--rules", str(rules)], env=env)
    assert result.exit_code == 0, result.output
    assert "webhook 'ops': HTTP 200" in result.output and receiver.url not in result.output
    assert len(receiver.delivered) == 1  # verified with the webhook's secret, none shared was set
    assert unknown.exit_code == 1 and "no webhook 'pager' (known: ops)" in unknown.output


def test_a_webhook_secret_must_be_long_and_is_never_shown():
    with pytest.raises(RulesError) as err:
        parse_rules({"webhooks": {"ops": {"url": "http://x/y", "secret": "hunter2"}},
                     "rules": [{"name": "a", "kind": "drift"}]}, "f.yml")
    assert "webhook 'ops' field 'secret': a webhook secret needs at least 16 characters" in str(err.value)
    assert "hunter2" not in str(err.value)
    rules = parse_rules({"webhooks": {"ops": {"url": "http://x/y", "secret": "0123456789abcdef"}},
                         "rules": [{"name": "a", "kind": "drift"}]})
    assert "0123456789abcdef" not in repr(rules)
    assert rules.webhooks["ops"].signing_secret("shared") == "0123456789abcdef"


def test_a_yaml_error_says_where_never_what_the_line_holds(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text('webhooks:\n  ops: {url: "https://hooks.slack.com/services/T1/B2/s3cret}\n')
    with pytest.raises(RulesError) as err:
        load_rules(broken)
    assert "s3cret" not in str(err.value) and "hooks.slack.com" not in str(err.value)
    assert str(err.value).startswith(f"{broken}: not valid YAML: ") and "(line 2, column " in str(err.value)


def test_drift_monitors_are_those_the_drift_check_publishes():
    from alerts.rules import DRIFT_MONITORS

    assert set(DRIFT_MONITORS) == {"prediction", "confidence", "input", "performance"}
    drift = {"name": "drift", "kind": "drift"}
    assert parse_rules({"rules": [{**drift, "monitors": list(DRIFT_MONITORS)}]}).rules[0].monitors == list(
        DRIFT_MONITORS)
    with pytest.raises(RulesError, match=r"rule 'drift' \(rules\[0\]\) field 'monitors': unknown drift monitor "
                                         r"'predictions' \(monitors: confidence, input, performance, prediction\)"):
        parse_rules({"rules": [{**drift, "monitors": ["predictions"]}]})


def test_min_history_is_at_most_what_a_restart_reads_back():
    from alerts.ticker_state import HISTORY_WINDOWS

    shift = {"name": "shift", "kind": "sentiment_shift", "threshold": 3}
    assert parse_rules({"rules": [{**shift, "min_history": HISTORY_WINDOWS}]}).rules[0].min_history == 48
    for kind in ({}, {"kind": "volume_spike"}):
        with pytest.raises(RulesError, match=r"field 'min_history': at most 48, the closed windows the engine keeps"):
            parse_rules({"rules": [{**shift, **kind, "min_history": HISTORY_WINDOWS + 1}]})


def test_a_rules_file_without_webhooks_is_refused(tmp_path):
    from typer.testing import CliRunner

    path = tmp_path / "rules.yml"
    path.write_text("rules:\n  - {name: d, kind: drift}\n")
    with pytest.raises(RulesError, match=r"no webhooks: define at least one under 'webhooks:'"):
        load_rules(path)
    for command in ("check", "run"):
        result = CliRunner().invoke(app, ["alerts", command, "--rules", str(path)])
        assert result.exit_code == 1 and "no webhooks" in result.output


def test_webhooks_give_up_after_a_day_unless_told_otherwise():
    hook = parse_rules({"webhooks": {"ops": {"url": "http://x/y"}}, "rules": [{"name": "d", "kind": "drift"}]})
    assert hook.webhooks["ops"].give_up_after == timedelta(hours=24) and hook.webhooks["ops"].max_attempts is None
    with pytest.raises(RulesError, match="give_up_after must be positive"):
        parse_rules({"webhooks": {"ops": {"url": "http://x/y", "give_up_after": 0}},
                     "rules": [{"name": "d", "kind": "drift"}]})


@pytest.mark.parametrize("hook,warning", [
    ({}, None),
    ({"max_attempts": 11}, None),  # its 10th wait is the first of 10 minutes
    ({"max_attempts": 8}, "webhook 'ops': max_attempts 8 gives up about 4 min after the first attempt, its longest "
                          "wait 128 s: backoff_max 10m is never reached"),
    ({"max_attempts": 1}, "webhook 'ops': max_attempts 1 never retries"),
    ({"give_up_after": "20m"}, "webhook 'ops': give_up_after 20m ends the retries before one waits backoff_max 10m "
                               "(about 17 min of shorter waits come first)"),
    ({"give_up_after": "20m", "backoff_max": "2s"}, None),
])
def test_check_warns_where_retries_never_reach_backoff_max(hook, warning):
    rules = parse_rules({"webhooks": {"ops": {"url": "http://x/y", **hook}}, "rules": [{"name": "d", "kind": "drift"}]})
    if warning is None:
        assert rules.warnings() == []
    else:
        [said] = rules.warnings()
        assert said.startswith(warning), said


def test_cli_check_shows_the_warnings_and_still_passes(tmp_path):
    from typer.testing import CliRunner

    path = tmp_path / "rules.yml"
    path.write_text("webhooks:\n  ops: {url: 'http://x/y', max_attempts: 8}\nrules:\n  - {name: d, kind: drift}\n")
    result = CliRunner().invoke(app, ["alerts", "check", "--rules", str(path)])
    assert result.exit_code == 0 and "rules ok" in result.output
    assert "warning: webhook 'ops': max_attempts 8 gives up" in result.output


def test_a_key_given_twice_is_refused_with_both_lines_while_a_merge_may_be_overridden(tmp_path):
    # PyYAML keeps the last of two equal keys: a second `rules:` would drop every rule above it, unsaid.
    hook = '{url: "http://127.0.0.1:9/hook", secret: "0123456789abcdef"}'
    twice = tmp_path / "twice.yml"
    twice.write_text(f"webhooks:\n  ops: {hook}\nrules:\n  - {{name: a, kind: drift}}\n"
                     f"rules:\n  - {{name: b, kind: drift}}\n")
    with pytest.raises(RulesError) as err:
        load_rules(twice)
    assert str(err.value).startswith(f"{twice}: not valid YAML: key 'rules' first given (line 3, column 1)")
    assert "(line 5, column 1)" in str(err.value)
    merged = tmp_path / "merged.yml"
    merged.write_text(f"webhooks:\n  ops: {hook}\nrules:\n  - &shift {{name: a, kind: sentiment_shift, threshold: 3}}\n"
                      "  - {<<: *shift, name: b, threshold: 2}\n")
    assert [(r.name, r.threshold) for r in load_rules(merged).rules] == [("a", 3), ("b", 2)]


def test_cli_check_warns_when_run_would_refuse_a_webhook_without_a_signing_key(tmp_path):
    from typer.testing import CliRunner

    path = tmp_path / "rules.yml"
    path.write_text("webhooks:\n  ops: {url: 'http://x/y'}\n  pager: {url: 'http://x/z', secret: 0123456789abcdef}\n"
                    "rules:\n  - {name: d, kind: drift}\n")
    unset = CliRunner().invoke(app, ["alerts", "check", "--rules", str(path)],
                               env={"FINSENT_ALERTS_WEBHOOK_SECRET": "", "COLUMNS": "200"})
    assert unset.exit_code == 0 and "rules ok" in unset.output
    assert ("warning: FINSENT_ALERTS_WEBHOOK_SECRET is not set here and webhook(s) ops have no secret of their own: "
            "`finsent alerts run` refuses to start without one") in unset.output
    shared = CliRunner().invoke(app, ["alerts", "check", "--rules", str(path)],
                                env={"FINSENT_ALERTS_WEBHOOK_SECRET": "s" * 32})
    assert shared.exit_code == 0 and "warning" not in shared.output
