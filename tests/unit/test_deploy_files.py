"""docker-compose.yml is checked without a Docker engine: its structure, its references, and
that every FINSENT_* value it sets passes the real settings validation."""

from __future__ import annotations

import re

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
        for key, value in SERVICES[name]["environment"].items():
            monkeypatch.setenv(key, re.sub(r"\$\{[^}]+\}", "placeholder", str(value)))
        settings = load_settings()
        bind = _option(SERVICES[name]["command"], "--host") or settings.metrics_host
        assert AllowedHosts.of(settings, bind).allows(target), target
        assert not AllowedHosts.of(settings, bind).allows("rebound.attacker.example"), target
    assert len(targets) == 4


def test_kafka_keeps_its_log_in_the_volume():
    kafka = SERVICES["kafka"]
    mounted = {volume.split(":")[1] for volume in kafka["volumes"]}
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in mounted
