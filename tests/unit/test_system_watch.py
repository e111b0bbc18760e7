"""`finsent up` keeps watching its processes; a `finsent down` from another terminal ends that
watch quietly, and a one-shot process that finished is not shown as unhealthy."""

from __future__ import annotations

import threading

from finsent import system
from finsent.settings import Settings
from tests.system_processes import settings_for, start_as
from tests.waiting import wait_for


def _watch(settings: Settings, started) -> tuple[threading.Thread, list[str]]:
    said: list[str] = []
    watcher = threading.Thread(target=system.watch, args=(settings, started, said.append, 0.05), daemon=True)
    watcher.start()
    return watcher, said


def test_down_from_elsewhere_ends_the_watch_without_crash_reports(tmp_path):
    settings = settings_for(tmp_path)
    started = [start_as(settings, "worker", "-c", "import time; time.sleep(120)")]
    watcher, said = _watch(settings, started)

    system.down(settings, echo=said.append)
    watcher.join(timeout=30)

    assert not watcher.is_alive()
    assert not started[0][1].is_running() or started[0][1].status() == "zombie"
    assert "worker: stopped" in said  # by `down`; the watch (another process in real use) ends on its own
    assert said.count("stopped by `finsent down`") == 1
    assert not any("exited" in line for line in said)


def test_a_process_that_dies_on_its_own_is_reported(tmp_path):
    settings = settings_for(tmp_path)
    started = [start_as(settings, "worker", "-c", "print('boom'); raise SystemExit(3)")]
    watcher, said = _watch(settings, started)
    try:
        wait_for(lambda: any(line.startswith("worker exited; from ") and "boom" in line
                             for line in said), 30, "the crash report", every=0.05)
        watcher.join(timeout=0.5)  # and keeps watching: only Ctrl-C or `finsent down` ends it
        assert watcher.is_alive()
    finally:
        system.down(settings, echo=said.append)
        watcher.join(timeout=30)
    assert not watcher.is_alive()


def test_a_finished_one_shot_is_neither_healthy_nor_unhealthy(tmp_path):
    settings = settings_for(tmp_path)
    _, proc = start_as(settings, "replay", "-c", "print('sample.jsonl: fetched 3, produced 3')")
    proc.wait(timeout=30)

    rows = {row["name"]: row for row in system.process_rows(settings)}

    assert rows["replay"]["healthy"] is None
    assert rows["replay"]["detail"].endswith("last log line: sample.jsonl: fetched 3, produced 3")
    assert rows["worker"]["healthy"] is False and rows["worker"]["detail"] == "not running"
