"""Settings come from FINSENT_* variables once; a wrong value names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from finsent.settings import SettingsError, load_settings


def test_defaults_point_at_local_services(monkeypatch):
    monkeypatch.delenv("FINSENT_KAFKA_BOOTSTRAP", raising=False)
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.elasticsearch_url == "http://127.0.0.1:9200"
    assert settings.topic("raw") == "finsent.raw"
    assert settings.index("docs") == "finsent-docs"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", "k1:9092,k2:9093")
    monkeypatch.setenv("FINSENT_TOPIC_PREFIX", "prod")
    monkeypatch.setenv("FINSENT_MODEL_DIR", str(tmp_path / "reg"))
    settings = load_settings()
    assert settings.kafka_bootstrap == "k1:9092,k2:9093"
    assert settings.topic("dlq") == "prod.dlq"
    assert settings.models_path == (tmp_path / "reg").resolve()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FINSENT_KAFKA_PORT", "not-a-port"),
        ("FINSENT_KAFKA_PORT", "70000"),
        ("FINSENT_KAFKA_BOOTSTRAP", "localhost"),
        ("FINSENT_ELASTICSEARCH_URL", "ftp://x"),
        ("FINSENT_INDEX_PREFIX", "Has Spaces"),
        ("FINSENT_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("FINSENT_WORKER_BATCH_SIZE", "0"),
        ("FINSENT_WINDOWS", "1 minute"),
        ("FINSENT_INGEST_POLL_INTERVAL", "inf"),  # one poll, ever; sources.yml and --interval refuse it too
        ("FINSENT_INGEST_POLL_INTERVAL", "0.001"),
    ],
)
def test_wrong_value_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert variable in str(info.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [("0m", "'0m' is not <positive integer>"), ("1m,1m", "'1m' is listed twice"),
     ("60m,1h", "'60m' and '1h' are the same size")],
)
def test_windows_the_worker_would_refuse_are_refused_at_start(monkeypatch, value, reason):
    # The worker parses FINSENT_WINDOWS when its app is made; a value only it refused was a bare traceback.
    monkeypatch.setenv("FINSENT_WINDOWS", value)
    with pytest.raises(SettingsError, match=f"FINSENT_WINDOWS: .*{reason}"):
        load_settings()


def test_good_windows_parse_as_before(monkeypatch):
    from finsent.window_sizes import parse_windows

    monkeypatch.setenv("FINSENT_WINDOWS", "1m,15m,1h,1d")
    assert parse_windows(load_settings().windows) == {"1m": 60, "15m": 900, "1h": 3600, "1d": 86400}
    monkeypatch.setenv("FINSENT_WINDOWS", "30s,2d")
    assert parse_windows(load_settings().windows) == {"30s": 30, "2d": 172800}


def test_a_minimum_baseline_above_the_baseline_is_refused(monkeypatch):
    # No baseline holds more than FINSENT_WINDOW_BASELINE windows: every z-score would be null, silently.
    monkeypatch.setenv("FINSENT_WINDOW_BASELINE", "5")
    monkeypatch.setenv("FINSENT_WINDOW_MIN_BASELINE", "6")
    with pytest.raises(SettingsError, match=r"FINSENT_WINDOW_MIN_BASELINE \(6\) is more than "
                                            r"FINSENT_WINDOW_BASELINE \(5\)"):
        load_settings()
    monkeypatch.setenv("FINSENT_WINDOW_MIN_BASELINE", "5")
    settings = load_settings()
    assert (settings.window_baseline, settings.window_min_baseline) == (5, 5)


def test_secret_values_are_never_shown(monkeypatch):
    monkeypatch.setenv("FINSENT_ELASTICSEARCH_PASSWORD", "hunter2-secret")
    settings = load_settings()
    assert "hunter2-secret" not in repr(settings)
    assert settings.elasticsearch_password.get_secret_value() == "hunter2-secret"


@pytest.mark.parametrize("variable", ["FINSENT_ELASTICSEARCH_URL", "FINSENT_KIBANA_URL"])
def test_credentials_in_a_url_are_refused_without_showing_them(monkeypatch, variable):
    # Status, logs and errors print these URLs: credentials belong in the settings that are never shown.
    monkeypatch.setenv(variable, "https://elastic:hunter2-secret@es.example:9200")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    service = variable.removeprefix("FINSENT_").removesuffix("_URL")
    assert f"{variable}: " in message and f"FINSENT_{service}_PASSWORD" in message
    assert "hunter2-secret" not in message and "elastic:" not in message and "https://***@es.example:9200" in message


@pytest.mark.parametrize("bootstrap", ["kafka:hunter2-secret@broker1:9093", "kafka:hunter2-secret@broker1",
                                       "broker0:9093,kafka:hunter2-secret@broker1:9093"])
def test_credentials_in_the_kafka_bootstrap_are_refused_without_showing_them(monkeypatch, bootstrap):
    # They passed as a host "kafka:hunter2-secret@broker1", port 9093: the client failed to resolve it, and its errors,
    # `finsent status` and the stop lines quote the bootstrap servers.
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", bootstrap)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "FINSENT_KAFKA_BOOTSTRAP: " in message and "carries credentials" in message
    assert "FINSENT_KAFKA_SASL_USERNAME" in message and "FINSENT_KAFKA_SASL_PASSWORD" in message
    assert "hunter2-secret" not in message and "kafka:" not in message and "***@broker1" in message


@pytest.mark.parametrize(("bootstrap", "entry", "reason"), [
    ("http://kafka:9092", "'http://kafka:9092'", "has a scheme (http://)"),
    ("PLAINTEXT://kafka:9092", "'PLAINTEXT://kafka:9092'", "has a scheme (PLAINTEXT://)"),
    ("k1:9092,SASL_SSL://k2:9093", "'SASL_SSL://k2:9093'", "has a scheme (SASL_SSL://)"),  # not the first entry
    ("kafka:9092/", "'kafka:9092/'", "has a path"),
    ("k1:9092, k2:9093/kafka", "'k2:9093/kafka'", "has a path"),
    ("::1:9092", "'::1:9092'", "an IPv6 address goes in brackets"),
    ("[not-ip]:9092", "'[not-ip]:9092'", "[not-ip] is not an IPv6 address"),
    ("kafka:0", "'kafka:0'", "a port from 1 to 65535"),
    ("k1:9092,", "an empty entry", "a stray comma"),
    ("kafka server:9092", "'kafka server'", "is not a host name or address"),
])
def test_a_kafka_bootstrap_entry_that_is_not_host_port_is_refused_by_name(monkeypatch, bootstrap, entry, reason):
    # http://kafka:9092 passed: aiokafka (the worker's client) took "http://kafka" as the host name, and the worker
    # failed later with a resolver error that named neither the setting nor the scheme.
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", bootstrap)
    with pytest.raises(SettingsError) as info:
        load_settings()
    problem = str(info.value).splitlines()[1]
    assert problem.lstrip().startswith("FINSENT_KAFKA_BOOTSTRAP: ") and entry in problem and reason in problem


@pytest.mark.parametrize("bootstrap", ["SASL_SSL://kafka:hunter2-secret@broker1:9093",
                                       "SASL_SSL://a:hunter2-secret@b1:9093,SASL_SSL://a:hunter2-secret@b2:9093",
                                       "http://u:pw@k1:9092,http://u:hunter2-secret@k2:9092"])
def test_a_scheme_with_credentials_is_refused_for_the_credentials_without_showing_them(monkeypatch, bootstrap):
    # The "(got ...)" part masked the first entry's user part only: the second entry's password was printed.
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", bootstrap)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "carries credentials" in str(info.value) and "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize("bootstrap", ["[::1]:9092", "k1:9092, k2:9093", "127.0.0.1:9092,[2001:db8::7]:19092",
                                       "broker_1.example.com.:9093"])
def test_kafka_bootstrap_lists_of_host_port_pass(monkeypatch, bootstrap):
    monkeypatch.setenv("FINSENT_KAFKA_BOOTSTRAP", bootstrap)
    assert load_settings().kafka_bootstrap == bootstrap


@pytest.mark.parametrize("url, shown", [
    ("http://ops:hunter2@kibana:5601/", "http://***@kibana:5601/"),
    ("https://news.example/feed.xml?apikey=hunter2&q=AAPL", "https://news.example/feed.xml?apikey=***&q=AAPL"),
    ("https://x/a?api_key=1&Access-Token=2&token=3&X-Amz-Signature=4&subscription-key=5&apiKey=6",
     "https://x/a?api_key=***&Access-Token=***&token=***&X-Amz-Signature=***&subscription-key=***&apiKey=***"),
    ("https://x/a?keyword=oil&monkey=1&token=", "https://x/a?keyword=oil&monkey=1&token="),  # no credential there
    ("http://u:hunter2@[::1/feed", "http://***@[::1/feed"),  # not even a URL
    ("SASL_SSL://kafka:hunter2@broker1:9093", "SASL_SSL://***@broker1:9093"),  # urlsplit takes no _ in a scheme
    ("news.example/feed", "news.example/feed"),
    ("ops:hunter2@kibana:5601", "***@kibana:5601"),  # typed without a scheme (`--kibana`)
    ("ops:hunter2@kibana/s?token=t0ken", "***@kibana/s?token=***"),
    ("/var/lib/finsent#", "/var/lib/finsent#"),  # nothing to mask: not rebuilt as a URL
    ("ht tp://news.example/feed?apikey=S3CRET#top", "ht tp://news.example/feed?apikey=***#top"),  # no scheme urlsplit takes
    ("feed_rss://u:pw@news.example/feed?apikey=S3CRET", "feed_rss://***@news.example/feed?apikey=***"),
    ("http://u:hunter2@[::1/feed?token=S3CRET", "http://***@[::1/feed?token=***"),  # not even a URL
])
def test_without_credentials_masks_a_urls_user_part_and_credential_parameters(url, shown):
    from finsent.settings import without_credentials

    assert without_credentials(url) == shown


def test_allowed_hosts_are_names_alone(monkeypatch):
    monkeypatch.setenv("FINSENT_ALLOWED_HOSTS", " ingest, Metrics.Example.com., worker ,")
    assert load_settings().allowed_host_names == ("ingest", "metrics.example.com", "worker")
    for bad in ("http://worker", "worker:6066", "worker/metrics", "a b", "-x.example"):
        monkeypatch.setenv("FINSENT_ALLOWED_HOSTS", f"ingest,{bad}")
        with pytest.raises(SettingsError, match=r"FINSENT_ALLOWED_HOSTS: .*is not a host name"):
            load_settings()

def test_config_file(monkeypatch, tmp_path: Path):
    config = tmp_path / "finsent.env"
    config.write_text("FINSENT_TOPIC_PREFIX=fromfile\n")
    monkeypatch.setenv("FINSENT_CONFIG_FILE", str(config))
    assert load_settings().topic_prefix == "fromfile"
    monkeypatch.setenv("FINSENT_TOPIC_PREFIX", "fromenv")
    assert load_settings().topic_prefix == "fromenv"  # the environment wins over the file
    monkeypatch.setenv("FINSENT_CONFIG_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(SettingsError, match="FINSENT_CONFIG_FILE"):
        load_settings()


def test_cli_reports_bad_settings(monkeypatch):
    from typer.testing import CliRunner

    from finsent.cli import app

    monkeypatch.setenv("FINSENT_ELASTICSEARCH_PORT", "-1")
    result = CliRunner().invoke(app, ["services", "status"])
    assert result.exit_code == 2
    assert "FINSENT_ELASTICSEARCH_PORT" in result.output
