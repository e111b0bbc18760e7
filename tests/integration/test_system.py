"""`finsent up --detach` → every process healthy and documents flowing into Elasticsearch →
`finsent down` → none of its processes left. The servers are the shared ones, reached as
"your own cluster" (a non-loopback-literal address), so `up` does not try to start them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finsent import clients
from tests.ports import free_ports
from tests.waiting import process_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINSENT = str(Path(sys.executable).parent / "finsent")


def _status(env: dict[str, str]) -> dict[str, dict]:
    out = subprocess.run([FINSENT, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    return {row["name"]: row for row in json.loads(out.stdout)}


def test_up_runs_the_whole_system_and_down_stops_it(settings, model_registry, tmp_path):
    env = os.environ | {
        "FINSENT_STATE_DIR": str(tmp_path / "state"),
        "FINSENT_MODEL_DIR": str(model_registry.root),
        "FINSENT_TOPIC_PREFIX": settings.topic_prefix,
        "FINSENT_INDEX_PREFIX": settings.index_prefix,
        "FINSENT_KAFKA_BOOTSTRAP": "localhost:9092",
        "FINSENT_ELASTICSEARCH_URL": "http://localhost:9200",
        "FINSENT_MODEL_THREADS": "1",
    }
    # Ports of their own: a `make up` on this machine (or another test) may hold the defaults.
    names = ("PUSH", "RECEIVER", "DASHBOARD", "WORKER_WEB", "ALERTS_METRICS", "RETRAIN_METRICS")
    ports = {f"FINSENT_{name}_PORT": port for name, port in zip(names, free_ports(len(names)), strict=True)}
    env |= {name: str(port) for name, port in ports.items()}
    up = subprocess.run([FINSENT, "up", "--detach"], env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "finsent is up:" in up.stdout  # without "(… still starting)"
    # up waited for each long-running process to answer (health page or port) before it said so
    assert {line.split(":")[0] for line in up.stdout.splitlines() if line.endswith(": ready")} == {
        "worker", "receiver", "alerts", "scheduler", "dashboard", "push"}, up.stdout
    pids = []
    try:
        long_running = {"worker", "receiver", "alerts", "scheduler", "dashboard", "push"}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rows = _status(env)
            if all(rows[name]["healthy"] for name in long_running):
                break
            time.sleep(3)
        assert all(rows[name]["healthy"] for name in long_running), rows
        assert rows["push"]["address"] == f"http://127.0.0.1:{ports['FINSENT_PUSH_PORT']}/", rows
        # the cluster asked directly (kafka-python 3 refused the old api_version_auto_timeout_ms: Kafka read as down)
        assert rows["kafka"]["detail"] == "1 broker(s)" and rows["elasticsearch"]["healthy"], rows
        assert rows["indices"]["healthy"] and "none blocked" in rows["indices"]["detail"], rows
        pids = [row["pid"] for row in rows.values() if row["kind"] == "process" and row["pid"]]

        # the sample replay flows through the worker into Elasticsearch, scored by the champion
        with clients.elasticsearch(settings) as es:
            count = 0
            while time.monotonic() < deadline + 120 and count < 5:
                es.indices.refresh(index=settings.index("docs"))
                count = es.count(index=settings.index("docs"))["count"]
                time.sleep(2)
            assert count >= 5
            hit = es.search(index=settings.index("docs"), size=1)["hits"]["hits"][0]["_source"]
            assert hit["model_version"] == model_registry.champion()
    finally:
        down = subprocess.run([FINSENT, "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert pids and all(process_gone(pid) for pid in pids)
    assert not any(row["healthy"] for row in _status(env).values() if row["kind"] == "process")
