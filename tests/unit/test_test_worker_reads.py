"""The integration tests' reads of a worker's /health and /metrics (tests/integration/stream_harness.py) and of a
started process's endpoint (tests/reliability/processes.py), against a real local HTTP server: patient with a slow
answer (a loaded CI machine); a poll inside ``wait_for`` tries again when an answer does not come, instead of
failing the test."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finsent.settings import Settings
from tests.integration.stream_harness import Worker
from tests.reliability.processes import Proc
from tests.waiting import wait_for

METRICS = b"# TYPE finsent_stream_consumed_total counter\nfinsent_stream_consumed_total 7.0\n"
SLOW_S = 6  # more than these reads once allowed: 5 s (3 s in Proc.wait_http)


class _Answers(BaseHTTPRequestHandler):
    """/health and /metrics as a worker serves them, after the server's ``delay``; its first ``drop`` requests get
    no answer at all (the connection closed)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        with self.server.lock:
            self.server.seen += 1
            dropped = self.server.seen <= self.server.drop
        if dropped:
            self.close_connection = True
            return
        time.sleep(self.server.delay)
        body = METRICS if self.path == "/metrics" else b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _WorkerStandIn(ThreadingHTTPServer):
    def __init__(self, delay: float, drop: int) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)
        self.delay, self.drop, self.seen, self.lock = delay, drop, 0, threading.Lock()


@pytest.fixture
def serve(tmp_path):
    servers: list[_WorkerStandIn] = []

    def start(delay: float = 0.0, drop: int = 0) -> Worker:
        server = _WorkerStandIn(delay, drop)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        worker = Worker(Settings(), tmp_path / "models", tmp_path / "state", tmp_path / "worker.log")
        worker.port = server.server_address[1]  # never started: its reads go to this server
        return worker

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_process_slow_to_answer_is_waited_for(serve, tmp_path):
    worker = serve(delay=SLOW_S)
    other = Proc(["labels", "serve"], {}, tmp_path / "labels.log")
    other.proc = subprocess.Popen(["sleep", "60"])  # alive, as a started process is; its server is the stand-in
    try:
        with ThreadPoolExecutor(3) as pool:  # all at once: one wait of SLOW_S
            health, metrics = pool.submit(worker.health), pool.submit(worker.metrics)
            ready = pool.submit(other.wait_http, worker.url("/health"), 3 * SLOW_S)
            assert health.result() == (200, {"status": "ok"})
            assert metrics.result() == METRICS.decode()
            ready.result()
    finally:
        other.proc.kill()
        other.proc.wait()


def test_a_poll_the_worker_does_not_answer_is_tried_again_not_a_failure(serve):
    worker = serve(drop=2)
    assert worker.metrics_or_none() is None
    assert wait_for(lambda: worker.samples_or_none("finsent_stream_consumed_total"), 10, "an answer",
                    every=0.05) == {(): 7.0}
    assert worker.metrics_or_none() == METRICS.decode()


def test_a_one_shot_read_the_worker_does_not_answer_fails(serve):
    import httpx

    worker = serve(drop=1)
    with pytest.raises(httpx.HTTPError):
        worker.metrics()
