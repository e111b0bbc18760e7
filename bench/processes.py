"""The isolated world a benchmark runs in, and the real ``finsent`` processes it starts.

Every run gets its own topic and index prefix (``bench<hex>``), a temporary state folder
and free ports, so it never touches the topics, indices or processes of a running system.
``cleanup`` deletes only what carries the run's prefix.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from finsent.settings import Settings

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def finsent_executable() -> str:
    beside = Path(sys.executable).parent / "finsent"
    return str(beside) if beside.exists() else (shutil.which("finsent") or "finsent")


class BenchWorld:
    """Isolated settings + a temporary folder; a context manager that cleans up after itself."""

    def __init__(self, settings: Settings, *, keep: bool = False, echo: Callable[[str], None] = print) -> None:
        tag = "bench" + uuid.uuid4().hex[:8]
        self.root = Path(tempfile.mkdtemp(prefix="finsent-bench-"))
        self.settings = settings.model_copy(update={"topic_prefix": tag, "index_prefix": tag,
                                                    "state_dir": self.root / "state"})
        self.keep = keep
        self.echo = echo
        self.processes: list[FinsentProcess] = []

    def __enter__(self) -> BenchWorld:
        from finsent.services import manager

        manager.init(self.settings, echo=lambda message: None)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.keep:
            self.echo(f"kept topics/indices with prefix {self.settings.topic_prefix} and {self.root}")
            return
        self.cleanup()

    def env(self, model_dir: Path, **extra: str) -> dict[str, str]:
        s = self.settings
        return os.environ | {
            "FINSENT_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "FINSENT_ELASTICSEARCH_URL": s.elasticsearch_url,
            "FINSENT_TOPIC_PREFIX": s.topic_prefix,
            "FINSENT_INDEX_PREFIX": s.index_prefix,
            "FINSENT_STATE_DIR": str(s.state_dir),
            "FINSENT_MODEL_DIR": str(model_dir),
            "FINSENT_INGEST_METRICS_PORT": "0",
            "FINSENT_ALERTS_METRICS_PORT": "0",
            "FINSENT_RETRAIN_METRICS_PORT": "0",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        } | extra

    def start(self, name: str, args: Sequence[str], env: dict[str, str], *, port: int | None = None,
              health_path: str | None = None) -> FinsentProcess:
        process = FinsentProcess(name, args, env, self.root / f"{name}.log", port=port, health_path=health_path)
        self.processes.append(process.start())
        return process

    def start_worker(self, model_dir: Path, model_ref: str, batch_size: int, batch_within: float,
                     **extra: str) -> FinsentProcess:
        """``finsent stream worker`` on this world's topics and indices, /health on a free port."""
        port = free_port()
        env = self.env(model_dir, FINSENT_WORKER_WEB_PORT=str(port), FINSENT_WORKER_BATCH_SIZE=str(batch_size),
                       FINSENT_WORKER_BATCH_WITHIN=str(batch_within), **extra)
        return self.start("worker", ["stream", "worker", "--model", model_ref], env, port=port, health_path="/health")

    def cleanup(self) -> None:
        from finsent.services.manager import remove_prefixed

        remove_prefixed(self.settings, echo=self.echo)
        shutil.rmtree(self.root, ignore_errors=True)


class FinsentProcess:
    """``finsent <args>`` as a real subprocess with its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_path: Path, *,
                 port: int | None = None, health_path: str | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.env = env
        self.log_path = log_path
        self.port = port
        self.health_path = health_path
        self.proc: subprocess.Popen | None = None
        self._out: Any = None

    def start(self) -> FinsentProcess:
        self._out = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([finsent_executable(), *self.args], env=self.env, stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_healthy(self, timeout: float, *, until: Callable[[dict[str, Any]], bool] | None = None,
                     what: str = "healthy", every: float = 0.5) -> None:
        """Until the health endpoint answers 200, and ``until`` (``what`` it waits for) accepts its JSON body."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log {self.log_path}:\n"
                                   f"{self.tail()}")
            try:
                response = httpx.get(self.url(self.health_path or "/"), timeout=3)
                if response.status_code == 200 and (until is None or until(response.json())):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(every)
        raise RuntimeError(f"{self.name} not {what} after {timeout:.0f}s; log {self.log_path}:\n{self.tail()}")

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout) if self.proc else None
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (a clean stop commits offsets), SIGKILL if it does not end in ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait(30)
        if self._out is not None:
            self._out.close()
            self._out = None
        return self.proc.returncode if self.proc else None
