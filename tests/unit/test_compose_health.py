"""docker-compose.yml's healthchecks, start order and data volumes, and the kibana-setup script, checked without a
Docker engine: the YAML is loaded, the finsent probes run against a local server, the script against a fake curl."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from finsent.settings import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {name for name, svc in SERVICES.items() if svc.get("restart") == "no"}
LONG_RUNNING = sorted(set(SERVICES) - ONE_SHOT)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck(name):
    test = SERVICES[name].get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_dependants_wait_for_health_or_completion():
    for name, service in SERVICES.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert (how or {}).get("condition") == wanted, f"{name} → {dependency}"


def test_prometheus_keeps_its_data_in_a_volume():
    prometheus = SERVICES["prometheus"]
    assert "--storage.tsdb.path=/prometheus" in prometheus["command"]
    named = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"] if not v.startswith((".", "/"))}
    assert "/prometheus" in named.values() and set(named) <= set(COMPOSE["volumes"])


def _served_port(name: str) -> int:
    command = SERVICES[name]["command"]
    if "--port" in command:
        return int(command[command.index("--port") + 1])
    settings = Settings()
    return {"worker": settings.worker_web_port, "alerts": settings.alerts_metrics_port,
            "scheduler": settings.retrain_metrics_port}[name]


FINSENT_SERVICES = sorted(n for n in LONG_RUNNING if SERVICES[n].get("image") == "finsent:local")


class _Status(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("name", FINSENT_SERVICES)
def test_finsent_probes_ask_the_port_the_service_serves(name):
    kind, executable, flag, code, url = SERVICES[name]["healthcheck"]["test"]
    assert (kind, executable, flag, code) == ("CMD", "python", "-c", COMPOSE["x-http-probe"])
    assert urlsplit(url).hostname == "127.0.0.1" and urlsplit(url).port == _served_port(name)


def test_the_python_probe_fails_on_an_error_status():
    assert (ROOT / "Dockerfile").read_text().splitlines()[1].startswith("FROM python:3")  # the image has python
    assert FINSENT_SERVICES == ["alerts", "dashboard", "ingest", "scheduler", "worker"]
    server = HTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        results = []
        for status in (200, 503):
            server.status = status  # type: ignore[attr-defined]
            url = f"http://127.0.0.1:{server.server_port}/health"
            results.append(subprocess.run([sys.executable, "-c", COMPOSE["x-http-probe"], url],
                                          capture_output=True).returncode)
    finally:
        server.shutdown()
        server.server_close()
    assert results[0] == 0 and results[1] != 0


_FAKE_CURL = """#!{python}
import json, sys
body = sys.stdin.read()
with open({log!r}, "a") as log:
    log.write(repr(sys.argv[1:]) + "\\n")
    try:
        log.write("password=" + json.loads(body)["password"] + "\\n")
    except ValueError:
        log.write("bad json\\n")
        print('{{"error":"json_parse_exception"}}')
        raise SystemExit
print({answer!r})
"""


def _kibana_setup(tmp_path: Path, password: str, answer: str) -> tuple[int, list[str]]:
    bin_dir, log = tmp_path / "bin", tmp_path / "curl.log"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "curl").write_text(_FAKE_CURL.format(python=sys.executable, log=str(log), answer=answer))
    (bin_dir / "sleep").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("curl", "sleep"):
        (bin_dir / tool).chmod(0o755)
    script = SERVICES["kibana-setup"]["volumes"][0].split(":")[0]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ELASTIC_PASSWORD": "e",
           "KIBANA_PASSWORD": password, "KIBANA_SETUP_ATTEMPTS": "2"}
    done = subprocess.run(["bash", str(ROOT / script)], env=env, capture_output=True, timeout=30)
    return done.returncode, log.read_text().splitlines()


@pytest.mark.parametrize("password", ['pa"ss\\word $HOME {}', "plain"])
def test_kibana_setup_sends_any_password_as_valid_json_off_the_command_line(tmp_path, password):
    assert SERVICES["kibana-setup"]["command"][-1] == "/usr/local/bin/kibana-setup.sh"
    returncode, log = _kibana_setup(tmp_path, password, "{}")
    assert returncode == 0 and log[1] == f"password={password}"
    assert password not in log[0]  # on stdin, not in curl's arguments


def test_kibana_setup_gives_up_on_a_lasting_error(tmp_path):
    returncode, log = _kibana_setup(tmp_path, "secret", '{"error":"unauthorized","status":401}')
    assert returncode == 1 and len(log) == 4  # two attempts, then a non-zero exit that compose reports
