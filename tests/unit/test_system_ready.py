"""`finsent up` waits until its processes answer before it says the system is up: one that dies while starting
is an error with its log, one still starting at the deadline is named (tests/integration/test_system.py runs the
whole system)."""

from __future__ import annotations

import pytest

from finsent import system
from finsent.services.process import START_MARK, ServiceError, last_start_excerpt
from tests.ports import free_port
from tests.system_processes import settings_for, start_as

HEALTH_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_processes_that_answer_are_ready_and_a_one_shot_is_not_waited_for(tmp_path):
    dashboard, scheduler = free_port(), free_port()
    settings = settings_for(tmp_path, dashboard_port=dashboard, retrain_metrics_port=scheduler)
    started = [
        start_as(settings, "dashboard", "-c", HEALTH_SERVER, str(dashboard)),  # its /health page
        start_as(settings, "scheduler", "-m", "http.server", str(scheduler), "--bind", "127.0.0.1"),  # its port
        start_as(settings, "replay", "-c", "import time; time.sleep(60)"),
    ]
    said: list[str] = []
    try:
        assert system.wait_ready(settings, started, said.append, timeout=60, poll_seconds=0.05) == []
        rows = {row["name"]: row for row in system.process_rows(settings)}
    finally:
        system.down(settings, echo=lambda m: None)
    assert sorted(said) == ["dashboard: ready", "scheduler: ready"]
    assert (rows["dashboard"]["healthy"], rows["dashboard"]["detail"]) == (True, "HTTP 200")
    assert (rows["scheduler"]["healthy"], rows["scheduler"]["detail"]) == (True, f"port {scheduler} answering")


def test_a_process_that_dies_while_starting_is_an_error_with_its_log(tmp_path):
    settings = settings_for(tmp_path)
    crash = "print('FINSENT_WORKER_WEB_PORT: not a port'); raise SystemExit(2)"
    started = [start_as(settings, "worker", "-c", crash)]
    started[0][1].wait(timeout=30)

    with pytest.raises(ServiceError, match=r"(?s)^worker exited \(status 2\) while starting; from .*worker\.log:\n"
                                           r"FINSENT_WORKER_WEB_PORT: not a port$"):
        system.wait_ready(settings, started, lambda m: None, timeout=30, poll_seconds=0.05)


def test_a_process_still_starting_at_the_deadline_is_named_not_fatal(tmp_path):
    settings = settings_for(tmp_path, worker_web_port=free_port(), alerts_metrics_port=(alerts := free_port()))
    started = [start_as(settings, name, "-c", "import time; time.sleep(60)") for name in ("worker", "alerts")]
    said: list[str] = []
    try:
        assert system.wait_ready(settings, started, said.append, timeout=0.3, poll_seconds=0.05) == ["worker", "alerts"]
        rows = {row["name"]: row for row in system.process_rows(settings)}
    finally:
        system.down(settings, echo=lambda m: None)
    assert said[0] == (f"worker: not ready after 0.3 s; still starting (`finsent status`, "
                       f"{system._log_path(settings, 'worker')})")
    assert (rows["alerts"]["healthy"], rows["alerts"]["detail"]) == (False, f"port {alerts} not answering")


def test_the_excerpt_is_the_last_start_s_errors_and_what_followed_them_else_its_last_lines(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text(f"{START_MARK}2026-12-01T08:00:00+00:00: finsent stream worker\n"
                   "2026-12-01 08:00:05,001 ERROR stream.app: an earlier start's error\n"
                   f"{START_MARK}2026-12-01T09:00:00+00:00: finsent stream worker\n"
                   "2026-12-01 09:00:01,000 INFO stream.app: loading\n"
                   "2026-12-01 09:00:02,000 ERROR faust.worker: Error: the scorer process could not load v1\n"
                   + "".join(f"2026-12-01 09:00:03,000 INFO faust.worker: Stopping {n}...\n" for n in range(30))
                   + "finsent: worker stopped: the scorer process could not load v1\n\n")
    assert last_start_excerpt(log) == ("2026-12-01 09:00:02,000 ERROR faust.worker: Error: the scorer process "
                                       "could not load v1\nfinsent: worker stopped: the scorer process could not "
                                       "load v1")

    log.write_text(log.read_text() + f"{START_MARK}2026-12-01T10:00:00+00:00: finsent stream worker\n"
                   + "".join(f"line {n}\n" for n in range(20)) + "ValueError: " + "bad " * 100 + "\n")
    assert last_start_excerpt(log, lines=3) == "line 18\nline 19\n" + ("ValueError: " + "bad " * 100)[:300]

    log.write_text(log.read_text() + f"{START_MARK}2026-12-01T11:00:00+00:00: finsent stream worker\n\n")
    assert last_start_excerpt(log) == "(it wrote nothing)"
    log.write_text("no mark: a log from before finsent marked its starts\n")
    assert last_start_excerpt(log) == "no mark: a log from before finsent marked its starts"


def test_the_excerpt_reads_kafka_s_and_elasticsearch_s_formats_and_skips_java_frames(tmp_path):
    kafka = tmp_path / "server.log"
    kafka.write_text(f"{START_MARK}2026-12-01T09:00:00+00:00: java kafka.Kafka server.properties\n"
                     "[2026-12-01 09:00:01,000] INFO starting (kafka.server.KafkaServer)\n"
                     "[2026-12-01 09:00:02,000] ERROR Exiting Kafka due to fatal exception (kafka.Kafka$)\n"
                     "org.apache.kafka.common.config.ConfigException: Invalid value -1 for configuration port\n"
                     "\tat org.apache.kafka.common.config.ConfigDef.parseValue(ConfigDef.java:1)\n"
                     "\t... 4 more\n"
                     "[2026-12-01 09:00:02,100] INFO shut down completed (kafka.server.KafkaServer)\n")
    assert last_start_excerpt(kafka).splitlines() == [
        "[2026-12-01 09:00:02,000] ERROR Exiting Kafka due to fatal exception (kafka.Kafka$)",
        "org.apache.kafka.common.config.ConfigException: Invalid value -1 for configuration port"]
    elastic = tmp_path / "elasticsearch.log"
    elastic.write_text("[2026-12-01T09:00:01,000][INFO ][o.e.n.Node ] [node] starting ...\n"
                       "[2026-12-01T09:00:02,000][ERROR][o.e.b.Elasticsearch] [node] fatal exception while booting\n"
                       "java.lang.IllegalStateException: failed to obtain node locks\n")
    assert last_start_excerpt(elastic).splitlines() == [
        "[2026-12-01T09:00:02,000][ERROR][o.e.b.Elasticsearch] [node] fatal exception while booting",
        "java.lang.IllegalStateException: failed to obtain node locks"]
