"""stop_process stops a process and its descendants: SIGTERM, then SIGKILL for what ignores it; a zombie that
another process has not reaped yet counts as stopped, and a child of ours is reaped."""

from __future__ import annotations

import subprocess
import sys

import psutil

from finsent.services.process import PidFile, has_exited, start_background, stop_process
from tests.waiting import process_gone, wait_for

IGNORES_SIGTERM = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "print('grandchild', flush=True); time.sleep(120)"])
time.sleep(120)
"""

# On SIGTERM it starts a child that ignores SIGTERM, then exits: a child started during the stop.
SPAWNS_ON_SIGTERM = """
import signal, subprocess, sys, time
def spawn_and_exit(*_):
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                              "print('late child', flush=True); time.sleep(120)"])
    print(child.pid, flush=True)
    time.sleep(2)  # the child has set its handler
    sys.exit(0)
signal.signal(signal.SIGTERM, spawn_and_exit)
print("ready", flush=True)
time.sleep(120)
"""

# The parent of a zombie: it starts a child that exits at once and never reaps it.
KEEPS_A_ZOMBIE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "pass"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_what_ignores_sigterm_is_killed_with_its_descendants_and_reaped(tmp_path):
    proc = start_background([sys.executable, "-c", IGNORES_SIGTERM], pid_file=PidFile(tmp_path / "p.pid"),
                            log_path=tmp_path / "p.log", env={}, cwd=tmp_path)
    grandchild = wait_for(lambda: proc.children(recursive=True), 60, "the grandchild")[0]
    wait_for(lambda: "grandchild" in (tmp_path / "p.log").read_text().splitlines()[-1], 60, "SIGTERM ignored")
    family = [proc, grandchild]

    stop_process(proc, timeout=0.5)

    assert all(has_exited(member) for member in family)
    assert not psutil.pid_exists(proc.pid)  # reaped, not left a zombie of this test process


def test_a_child_started_during_the_stop_is_killed_with_the_group(tmp_path):
    log = tmp_path / "p.log"
    proc = start_background([sys.executable, "-c", SPAWNS_ON_SIGTERM], pid_file=PidFile(tmp_path / "p.pid"),
                            log_path=log, env={}, cwd=tmp_path)
    wait_for(lambda: log.read_text().splitlines()[-1] == "ready", 60, "the process to set its handler")

    stop_process(proc, timeout=30)

    late = int(next(line for line in log.read_text().splitlines() if line.isdigit()))
    wait_for(lambda: process_gone(late), 10, "the late child to be killed")  # it ignores SIGTERM and sleeps 120 s


def test_another_process_s_zombie_counts_as_stopped(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", KEEPS_A_ZOMBIE], stdout=subprocess.PIPE, text=True)
    try:
        zombie = psutil.Process(int(parent.stdout.readline()))
        wait_for(lambda: zombie.status() == psutil.STATUS_ZOMBIE, 60, "the zombie")

        stop_process(zombie, timeout=600)  # psutil.wait_procs waited here until the timeout: the pid still exists

        assert parent.poll() is None and zombie.status() == psutil.STATUS_ZOMBIE  # nobody reaped it meanwhile
    finally:
        parent.kill()
        parent.wait()
