"""Long-running ``finsent`` commands as real subprocesses, configured through FINSENT_* variables."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx

from finsent.settings import Settings
from tests.integration.stream_harness import ANSWER_WITHIN_S, FINSENT, ROOT, free_port, wait_for


def env_for(settings: Settings, state_dir: Path, **extra: Any) -> dict[str, str]:
    """The environment of a process that uses ``settings``' servers, prefixes and folders."""
    env = os.environ | {
        "FINSENT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FINSENT_ELASTICSEARCH_URL": settings.elasticsearch_url,
        "FINSENT_TOPIC_PREFIX": settings.topic_prefix,
        "FINSENT_INDEX_PREFIX": settings.index_prefix,
        "FINSENT_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "FINSENT_STATE_DIR": str(state_dir),
        "FINSENT_MODEL_DIR": str(settings.models_path),
        "FINSENT_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return env | {k: str(v) for k, v in extra.items()}


class Proc:
    """One ``finsent …`` process; its stdout and stderr go to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        self._out = open(self.log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([str(FINSENT), *self.args], env=self.env, stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float = 90, ok=(200,)) -> None:
        def up():
            if not self.alive:
                raise AssertionError(f"{self.args} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                return httpx.get(url, timeout=ANSWER_WITHIN_S).status_code in ok
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, f"{url} ({' '.join(self.args)})")

    def wait_output(self, text: str, timeout: float = 90) -> None:
        def seen():
            if not self.alive:
                raise AssertionError(f"{self.args} exited with {self.proc.returncode}:\n{self.tail()}")
            return text in self.output()

        wait_for(seen, timeout, f"{text!r} in the output of {' '.join(self.args)}")

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait(30)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def ensure_stopped(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait(30)
            self._out.close()


__all__ = ["Proc", "env_for", "free_port"]
