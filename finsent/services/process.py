"""Background server processes tracked by pid file, stopped by pid (never by name).

A pid file records the pid and the process's start time, so a recycled pid that now
belongs to someone else is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil


class ServiceError(RuntimeError):
    """A service could not be fetched, started or stopped; the message says what to do."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_taken(port: int, owner: str, advice: str) -> str:
    """What ``port_in_use`` found, said the same way for a server and for a process."""
    return f"port {port} for {owner} is taken by another process; {advice}"


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64_000))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


START_MARK = "==== finsent started "  # the line start_background writes before each start
# Log records at a level that says why a process ended, and routine ones: finsent's and Kafka's formats
# (`2026-12-01 18:00:00,000 ERROR …`, `[2026-12-01 18:00:00,000] ERROR …`), Elasticsearch's (`[…][ERROR][…]`).
ERROR_RECORD = re.compile(r"^(\[?\S+ \S+\]? (ERROR|CRITICAL|FATAL) |\[[^]]*\]\[(ERROR|FATAL) *\])")
ROUTINE = re.compile(r"^(\[?\S+ \S+\]? (TRACE|DEBUG|INFO|WARNING|WARN) |\[[^]]*\]\[(TRACE|DEBUG|INFO|WARN) *\]"
                     r"|\s+at |\s*\.\.\. \d+ more)")  # and a Java stack frame, which says less than its exception
EXCERPT_LINE_CHARS = 300


def last_start_lines(path: Path) -> list[str]:
    """The non-blank lines of the log's last start (of its last 64 KB), after the mark start_background wrote."""
    text = tail(path, 2_000)
    since_start = text.split(START_MARK)[-1].splitlines()[1:] if START_MARK in text else text.splitlines()
    return [line for line in since_start if line.strip()]


def last_start_excerpt(path: Path, lines: int = 15) -> str:
    """Why a process ended, from what its last start wrote (logs are appended to): its last five error records
    and, after them, the last three lines that are not routine records (a ``finsent: …`` message, a traceback's
    last line); without error records, its last ``lines`` lines. A crashing Faust worker logs its error, then a
    page of shutdown lines."""
    written = [line[:EXCERPT_LINE_CHARS] for line in last_start_lines(path)]
    if not written:
        return "(it wrote nothing)"
    errors = [at for at, line in enumerate(written) if ERROR_RECORD.match(line)]
    if not errors:
        return "\n".join(written[-lines:])
    after = [line for line in written[errors[-1] + 1:] if not ROUTINE.match(line)]
    return "\n".join([written[at] for at in errors[-5:]] + after[-3:])


def has_exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie its parent has not reaped yet."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def exit_code(proc: psutil.Process) -> int | None:
    """The exit status of a child of this process that has ended (None for another's, or one still running)."""
    try:
        return proc.wait(timeout=0)
    except (psutil.TimeoutExpired, subprocess.TimeoutExpired, psutil.NoSuchProcess, ChildProcessError):
        return None


@dataclass
class PidFile:
    path: Path

    def write(self, proc: psutil.Process) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "create_time": proc.create_time()}))
        tmp.replace(self.path)

    def process(self) -> psutil.Process | None:
        """The live process this file names, or None (stale files are removed)."""
        try:
            info = json.loads(self.path.read_text())
            proc = psutil.Process(int(info["pid"]))
            if abs(proc.create_time() - float(info["create_time"])) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(proc.pid)
            return proc
        except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
            return None
        except psutil.Error:
            self.path.unlink(missing_ok=True)
            return None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def start_background(
    argv: list[str],
    *,
    pid_file: PidFile,
    log_path: Path,
    env: dict[str, str],
    cwd: Path,
    user: str | None = None,
) -> psutil.Process:
    """Start ``argv`` detached in its own session, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"{START_MARK}{started}: {shlex.join(argv)}\n".encode())
        log.flush()
        # psutil's Popen keeps the exit status: a dropped subprocess.Popen is reaped by the next one's start
        proc = psutil.Popen(  # noqa: S603 - argv is built by us, never from user text
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    pid_file.write(proc)
    return proc


def stop_process(proc: psutil.Process, timeout: float = 60.0) -> None:
    """SIGTERM the process and every descendant, then SIGKILL what is left after ``timeout``. A process
    that leads its own group (as :func:`start_background` starts them) has its group killed at the end:
    a child it started during the stop was not among the descendants listed at its start."""
    try:
        family = [proc, *proc.children(recursive=True)]
        own_group = os.getpgid(proc.pid) == proc.pid
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    for member in family:
        try:
            member.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    alive = _wait_exited(family, timeout)
    if own_group:
        _kill_group(proc)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_exited(alive, 10)
    for member in family:
        exit_code(member)  # reaps a child of ours; nothing for another's


def _kill_group(leader: psutil.Process) -> None:
    """SIGKILL what is left of the group ``leader`` leads, children started late included. Before we
    reap the leader, its id cannot pass to another group: the leader, even as a zombie, holds it, and
    so does any member still running. One that another process reaped (init, once the ``finsent up``
    that started it has exited) may have let the id go; a new process that took it has another start
    time, and is left alone."""
    try:
        if psutil.Process(leader.pid) != leader:  # psutil compares start times counted from boot: no clock step
            return
    except psutil.NoSuchProcess:
        pass  # reaped: the group, if any member is left, is still ours
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader.pid, signal.SIGKILL)


def _wait_exited(members: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those still running after ``timeout``. A zombie counts as gone: psutil.wait_procs polls another's zombie
    until its parent reaps it (a second per process here, in each ``finsent down``)."""
    deadline = time.monotonic() + timeout
    alive = list(members)
    while alive:
        alive = [member for member in alive if not has_exited(member)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def wait_until(check, *, timeout: float, proc: psutil.Process, log_path: Path, name: str, interval: float = 1.0):
    """Poll ``check()`` until it returns a truthy value; fail fast if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if has_exited(proc):
            raise ServiceError(f"{name} exited during start. From {log_path}:\n{last_start_excerpt(log_path)}")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure here just means "not ready yet"
            last_error = exc
        time.sleep(interval)
    raise ServiceError(
        f"{name} did not become healthy within {timeout:.0f}s (last error: {last_error}). "
        f"From {log_path}:\n{last_start_excerpt(log_path)}"
    )
