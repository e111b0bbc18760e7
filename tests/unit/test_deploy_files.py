"""docker-compose.yml is checked without a Docker engine: its structure, its references, and
that every FINSENT_* value it sets passes the real settings validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from finsent.settings import load_settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
FINSENT_SERVICES = [name for name, svc in SERVICES.items() if svc.get("image") == "finsent:local"]


def test_every_service_has_an_image_or_build_and_known_dependencies():
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"


def test_the_system_is_all_there():
    assert {"kafka", "elasticsearch", "kibana", "prometheus"} <= set(SERVICES)
    assert {"ingest", "worker", "scheduler", "alerts", "dashboard"} <= set(FINSENT_SERVICES)
    assert "ports" not in SERVICES["worker"], "the worker must stay scalable with --scale"


def test_elasticsearch_keeps_security_on():
    assert SERVICES["elasticsearch"]["environment"]["xpack.security.enabled"] == "true"


@pytest.mark.parametrize("name", FINSENT_SERVICES)
def test_finsent_environment_is_valid_settings(monkeypatch, name):
    for key, value in SERVICES[name]["environment"].items():
        monkeypatch.setenv(key, re.sub(r"\$\{[^}]+\}", "placeholder", str(value)))
    settings = load_settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.elasticsearch_username == "elastic"


@pytest.mark.parametrize("name", FINSENT_SERVICES)
def test_finsent_commands_name_real_cli_groups(name):
    from finsent.cli import _GROUPS

    command = SERVICES[name]["command"]
    words = command if command[0] == "finsent" else command[-1].split()
    groups = {g for g, _, _ in _GROUPS} | {"init", "up", "down", "status"}
    assert words[0] == "finsent" and words[1] in groups


def test_prometheus_scrapes_every_finsent_process():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for name in ("worker", "ingest", "alerts", "scheduler", "dashboard"):
        assert f"finsent-{name}" in jobs


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_scraped_and_published_processes_listen_beyond_the_container():
    # Prometheus and the published ports reach a container from outside it: a process bound to
    # 127.0.0.1 there answers no one.
    assert SERVICES["ingest"]["environment"]["FINSENT_METRICS_HOST"] == "0.0.0.0"
    for name in ("ingest", "dashboard"):
        assert _option(SERVICES[name]["command"], "--host") == "0.0.0.0", name


def test_prometheus_scrapes_the_ports_the_services_serve():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0]
               for job in config["scrape_configs"] if "static_configs" in job}
    # `ingest serve` serves /metrics on its push port.
    assert targets["finsent-ingest"] == f"ingest:{_option(SERVICES['ingest']['command'], '--port')}"
    assert targets["finsent-dashboard"] == f"dashboard:{_option(SERVICES['dashboard']['command'], '--port')}"


def test_prometheus_scrapes_by_names_the_services_answer(monkeypatch):
    # /metrics answers only this machine's names in the Host header (finsent.allowed_hosts); Prometheus sends the
    # target's: a service name must be in FINSENT_ALLOWED_HOSTS, an address from DNS (type A) always passes.
    from finsent.allowed_hosts import AllowedHosts

    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [target for job in config["scrape_configs"] for static in job.get("static_configs", [])
               for target in static["targets"]]
    assert {sd["type"] for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])} == {"A"}
    for target in targets:
        name = target.partition(":")[0]
        with monkeypatch.context() as env:  # each service with its own environment alone
            for key, value in SERVICES[name]["environment"].items():
                env.setenv(key, re.sub(r"\$\{[^}]+\}", "placeholder", str(value)))
            settings = load_settings()
        bind = _option(SERVICES[name]["command"], "--host") or settings.metrics_host
        assert AllowedHosts.of(settings, bind).allows(target), target
        assert not AllowedHosts.of(settings, bind).allows("rebound.attacker.example"), target
    assert len(targets) == 4


def test_kafka_keeps_its_log_in_the_volume():
    kafka = SERVICES["kafka"]
    mounted = {volume.split(":")[1] for volume in kafka["volumes"]}
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in mounted


# Compose's interpolation, as far as docker-compose.yml uses it: ${NAME}, ${NAME:-default}, ${NAME:+value},
# ${NAME:?error} (unset and empty alike), $$; no nesting (compose checks a nested ${…:?…} even when it is unused).
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::([-+?])([^}]*))?\}")


def _interpolated(value, env: dict[str, str]):
    if isinstance(value, dict):
        return {key: _interpolated(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolated(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, word = match.groups()
        if name is None:
            return "$"
        current = env.get(name, "")
        if op == "?" and not current:
            raise ValueError(f"required variable {name} is missing a value: {word}")
        return (word if current else "") if op == "+" else current or (word if op == "-" else "")

    return _VARIABLE.sub(one, value)


PUSH_TOKENS = "/run/secrets/finsent-push-tokens"
LABEL_TOKENS = "/run/secrets/finsent-label-tokens"
OTHER_SECRETS = {"ELASTIC_PASSWORD": "e", "KIBANA_PASSWORD": "k", "FINSENT_LABEL_TOKEN": "l" * 32,
                 "FINSENT_ALERTS_WEBHOOK_SECRET": "w" * 32}


@pytest.mark.parametrize("push", [{"FINSENT_PUSH_TOKENS_FILE": "/srv/finsent/push-tokens"},
                                  {"FINSENT_PUSH_TOKEN": "p" * 32}, {}],
                         ids=["tokens file only", "shared token only", "neither"])
def test_compose_takes_a_push_token_or_a_tokens_file(monkeypatch, push):
    # Before, compose refused to start without FINSENT_PUSH_TOKEN, also for senders that each have their own token
    # in FINSENT_PUSH_TOKENS_FILE, which it did not pass to the container either.
    compose = _interpolated(COMPOSE, OTHER_SECRETS | push)
    ingest = compose["services"]["ingest"]
    mounts = {target: source for source, target, *_ in (volume.split(":") for volume in ingest["volumes"])}
    for key, value in ingest["environment"].items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    if "FINSENT_PUSH_TOKENS_FILE" in push:
        assert settings.push_tokens_file == Path(PUSH_TOKENS)
        assert mounts[PUSH_TOKENS] == push["FINSENT_PUSH_TOKENS_FILE"]
    else:
        assert settings.push_tokens_file is None
    assert (settings.push_token.get_secret_value() if settings.push_token else "") == push.get("FINSENT_PUSH_TOKEN", "")
    # With neither, ingest refuses to start (test_ingest_push_tokens) rather than generate a token in its volume.
    assert "--require-token" in ingest["command"]
    assert mounts["/var/lib/finsent"] == "finsent-state"


@pytest.mark.parametrize("labels", [{"FINSENT_LABEL_TOKENS_FILE": "/srv/finsent/label-tokens"},
                                    {"FINSENT_LABEL_TOKEN": "l" * 32}, {}],
                         ids=["tokens file only", "shared token only", "neither"])
def test_compose_gives_the_dashboards_labels_api_a_shared_token_or_a_tokens_file(monkeypatch, labels):
    # Before, compose required FINSENT_LABEL_TOKEN, also of annotators who each have their own token in
    # FINSENT_LABEL_TOKENS_FILE, which it did not pass to the dashboard (the review page's labels API) either.
    others = {key: value for key, value in OTHER_SECRETS.items() if key != "FINSENT_LABEL_TOKEN"}
    compose = _interpolated(COMPOSE, others | labels)
    dashboard = compose["services"]["dashboard"]
    mounts = {target: (source, options) for source, target, *options in (v.split(":") for v in dashboard["volumes"])}
    for key, value in dashboard["environment"].items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    if "FINSENT_LABEL_TOKENS_FILE" in labels:
        assert settings.label_tokens_file == Path(LABEL_TOKENS)
        assert mounts[LABEL_TOKENS] == (labels["FINSENT_LABEL_TOKENS_FILE"], ["ro"])
    else:
        assert settings.label_tokens_file is None
    shared = labels.get("FINSENT_LABEL_TOKEN", "")
    assert (settings.label_token.get_secret_value() if settings.label_token else "") == shared
    # With neither, the dashboard refuses to start (test_retrain_label_tokens) rather than serve labelling off.
    assert "--require-label-token" in dashboard["command"]
    assert mounts["/var/lib/finsent"][0] == "finsent-state" and mounts["/data"][1] == ["ro"]
