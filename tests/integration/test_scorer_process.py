"""The model in a child process: same figures as in the worker's own process, a clear error for a
model that cannot load, a restart after the child dies, and no child left behind by a killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from finsent.settings import Settings

TEXTS = ["Profit rose 20% on record sales.", "The company cut 500 jobs after losses widened.",
         "The annual meeting is on Tuesday.", "x" * 3000]


@pytest.fixture
def process_settings(tiny_model) -> Settings:
    return Settings(model_dir=tiny_model.registry_root, device="cpu", model_threads=1, model_quantize="none")


def flat(rows: list[list[float]]) -> list[float]:
    return [p for row in rows for p in row]


def wait_dead(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_scorer_process_scores_what_the_scorer_scores_and_ends_on_close(process_settings, tiny_model):
    from model.scorer import Scorer
    from model.scorer_process import ScorerProcess

    local = Scorer.from_settings(process_settings, "champion")
    remote = ScorerProcess(process_settings, "champion")
    try:
        assert remote.version == tiny_model.version and remote.pid != os.getpid()
        assert remote.path == tiny_model.path.resolve()
        assert flat(remote.predict_proba(TEXTS)) == pytest.approx(flat(local.predict_proba(TEXTS)), abs=1e-6)
        assert [s.label for s in remote.score(TEXTS)] == [s.label for s in local.score(TEXTS)]
        assert remote.score([]) == []
    finally:
        remote.close()
    assert wait_dead(remote.pid, 15)


def test_a_model_that_cannot_load_is_a_clear_error(process_settings, tmp_path: Path):
    from model.registry import RegistryError
    from model.scorer_process import ScorerProcess, ScorerProcessError

    with pytest.raises(RegistryError, match="v20990101-000000-0000"):
        ScorerProcess(process_settings, "v20990101-000000-0000")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ScorerProcessError, match=r"could not load .*broken-model"):
        ScorerProcess(process_settings, str(broken))


def test_a_killed_scorer_process_is_started_again_from_the_same_folder(process_settings, tiny_model):
    from model.scorer import Scorer
    from model.scorer_process import ScorerProcess

    local = Scorer.from_settings(process_settings, "champion")
    restarts: list[int] = []
    remote = ScorerProcess(process_settings, "champion", on_restart=lambda: restarts.append(1))
    try:
        before = remote.predict_proba(TEXTS[:2])
        first = remote.pid
        os.kill(first, signal.SIGKILL)
        assert wait_dead(first)
        assert flat(remote.predict_proba(TEXTS[:2])) == pytest.approx(flat(before), abs=1e-6)
        second = remote.pid
        assert second != first and remote.version == tiny_model.version
        # Killed while the next batch is on its way: that batch is sent again to a new child.
        killer = threading.Timer(0.02, os.kill, (second, signal.SIGKILL))
        killer.start()
        assert flat(remote.predict_proba(TEXTS * 50)) == pytest.approx(flat(local.predict_proba(TEXTS * 50)), abs=1e-6)
        killer.join()
        assert remote.pid not in (first, second) and len(restarts) == 2
    finally:
        remote.close()


def test_the_scorer_process_exits_when_its_parent_is_killed(process_settings, tmp_path: Path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from finsent.settings import Settings
        from model.scorer_process import ScorerProcess
        if __name__ == "__main__":  # a spawned child imports this file again
            remote = ScorerProcess(Settings(model_dir={str(process_settings.models_path)!r}, device="cpu",
                                            model_threads=1), "champion")
            print(remote.pid, flush=True)
            time.sleep(600)
    """), encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child)
    finally:
        parent.kill()
        parent.wait()
    assert wait_dead(child), f"scorer process {child} outlived its killed parent"
