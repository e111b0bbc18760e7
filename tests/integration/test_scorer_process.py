"""Models in a child process: same figures as in the worker's own process, a second model beside the
first for a hot swap, a clear error for a model that cannot load, a restart after the child dies,
and no child left behind by a killed parent."""

from __future__ import annotations

import json
import os
import shutil
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
from tests.waiting import process_gone, wait_for

TEXTS = ["Profit rose 20% on record sales.", "The company cut 500 jobs after losses widened.",
         "The annual meeting is on Tuesday.", "x" * 3000]


@pytest.fixture
def process_settings(tiny_model) -> Settings:
    return Settings(model_dir=tiny_model.registry_root, device="cpu", model_threads=1, model_quantize="none")


def flat(rows: list[list[float]]) -> list[float]:
    return [p for row in rows for p in row]


def test_a_scorer_process_scores_as_the_scorer_does_outlives_group_signals_and_ends_on_close(process_settings,
                                                                                              tiny_model):
    from model.scorer import Scorer
    from model.scorer_process import ScorerProcess

    local = Scorer.from_settings(process_settings, "champion")
    remote = ScorerProcess(process_settings).load("champion")
    try:
        assert remote.version == tiny_model.version and remote.pid != os.getpid()
        pid = remote.pid
        assert remote.path == tiny_model.path.resolve()
        assert flat(remote.predict_proba(TEXTS)) == pytest.approx(flat(local.predict_proba(TEXTS)), abs=1e-6)
        assert [s.label for s in remote.score(TEXTS)] == [s.label for s in local.score(TEXTS)]
        assert remote.score([]) == []
        for signum in (signal.SIGINT, signal.SIGTERM):  # sent to a worker's process group: the worker decides
            os.kill(remote.pid, signum)
        assert flat(remote.predict_proba(TEXTS)) == pytest.approx(flat(local.predict_proba(TEXTS)), abs=1e-6)
        assert remote.pid == pid
    finally:
        remote.close()
    wait_for(lambda: process_gone(remote.pid), 15, "the scorer process to end on close")


def test_a_model_that_cannot_load_is_a_clear_error(process_settings, tmp_path: Path):
    from model.registry import RegistryError
    from model.scorer_process import ScorerProcess, ScorerProcessError

    process = ScorerProcess(process_settings)
    with pytest.raises(RegistryError, match="v20990101-000000-0000"):
        process.load("v20990101-000000-0000")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ScorerProcessError, match=r"could not load .*broken-model"):
        process.load(str(broken))
    assert process.pid is not None and process_gone(process.pid)  # no idle child left behind


def copy_model(tiny_model, folder: Path, version: str) -> Path:
    """The tiny model's files under another version, as a retrain would promote."""
    shutil.copytree(tiny_model.path, folder)
    metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    (folder / "metadata.json").write_text(json.dumps(metadata | {"version": version}), encoding="utf-8")
    return folder


def test_a_second_model_loads_beside_the_first_in_the_same_process(process_settings, tiny_model, tmp_path: Path):
    from model.registry import is_held
    from model.scorer import ScorerUnavailable
    from model.scorer_process import ScorerProcess, ScorerProcessError

    restarts: list[int] = []
    process = ScorerProcess(process_settings, on_restart=lambda: restarts.append(1))
    old = process.load("champion")
    try:
        pid = old.pid
        expected = old.predict_proba(TEXTS)
        new = process.load(str(copy_model(tiny_model, tmp_path / "model-b", "v-promoted")))
        assert (new.version, new.pid, new.path) == ("v-promoted", pid, tmp_path / "model-b")
        assert is_held(old.path) and is_held(new.path)  # a prune leaves them (model.registry)
        assert flat(new.predict_proba(TEXTS)) == pytest.approx(flat(expected), abs=1e-6)
        assert flat(old.predict_proba(TEXTS)) == pytest.approx(flat(expected), abs=1e-6)
        # A model that cannot load leaves the loaded ones scoring in the same child.
        broken = tmp_path / "broken-model"
        broken.mkdir()
        (broken / "config.json").write_text("{not json", encoding="utf-8")
        with pytest.raises(ScorerProcessError, match=r"could not load .*broken-model"):
            process.load(str(broken))
        old.close()
        assert not is_held(old.path) and is_held(new.path)
        with pytest.raises(ScorerUnavailable, match="closed"):
            old.predict_proba(TEXTS)
        assert flat(new.predict_proba(TEXTS)) == pytest.approx(flat(expected), abs=1e-6)
        assert new.pid == pid and not restarts
        # A new child loads the models still open, and only those.
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: process_gone(pid), 30, "the killed scorer process to exit")
        assert flat(new.predict_proba(TEXTS)) == pytest.approx(flat(expected), abs=1e-6)
        assert new.pid != pid and len(restarts) == 1
        assert process.folders == [tmp_path / "model-b"]
        old.close()  # closed already: nothing happens
        assert new.pid == process.pid and not process_gone(new.pid)
        new.close()
        assert not is_held(new.path)
        wait_for(lambda: process_gone(process.pid), 15, "the scorer process to end with its last model")
    finally:
        process.close()


def test_a_killed_scorer_process_is_started_again_from_the_same_folder(process_settings, tiny_model):
    from model.scorer import Scorer, ScorerCrashed
    from model.scorer_process import ScorerProcess

    local = Scorer.from_settings(process_settings, "champion")
    restarts: list[int] = []
    remote = ScorerProcess(process_settings, on_restart=lambda: restarts.append(1)).load("champion")
    try:
        before = remote.predict_proba(TEXTS[:2])
        first = remote.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: process_gone(first), 30, "the killed scorer process to exit")
        assert flat(remote.predict_proba(TEXTS[:2])) == pytest.approx(flat(before), abs=1e-6)
        second = remote.pid
        assert second != first and remote.version == tiny_model.version
        # Killed while a batch of several texts is on its way: the worker halves that batch
        # (stream.pipeline), and each half goes to a new child.
        killer = threading.Timer(0.02, os.kill, (second, signal.SIGKILL))
        killer.start()
        with pytest.raises(ScorerCrashed, match=r"died \(exit code -9\) on a batch of 200 texts"):
            remote.predict_proba(TEXTS * 50)
        killer.join()
        assert len(restarts) == 1
        assert flat(remote.predict_proba(TEXTS * 25)) == pytest.approx(flat(local.predict_proba(TEXTS * 25)), abs=1e-6)
        assert remote.pid not in (first, second) and len(restarts) == 2
    finally:
        remote.close()


def test_a_new_model_s_onnx_export_does_not_stall_the_model_that_scores(process_settings, tiny_model,
                                                                          tmp_path: Path):
    from model.onnx_runtime import CACHE_DIR, INT8_FILE
    from model.scorer_process import ScorerProcess

    process = ScorerProcess(process_settings.model_copy(update={"model_quantize": "onnx-int8"}))
    old = process.load(str(copy_model(tiny_model, tmp_path / "model-a", "v-old")))
    new_folder = copy_model(tiny_model, tmp_path / "model-b", "v-new")
    shutil.rmtree(new_folder / CACHE_DIR, ignore_errors=True)
    try:
        assert old.precision == "onnx-int8"
        loaded = []
        loading = threading.Thread(target=lambda: loaded.append(process.load(str(new_folder))))
        loading.start()
        wait_for(lambda: any((new_folder / CACHE_DIR).glob(".export-*")), 120, "the new model's export to start")
        old.predict_proba(TEXTS)  # answered while the export runs, not after it
        assert loading.is_alive()
        loading.join(300)
        [new] = loaded
        assert (new_folder / CACHE_DIR / INT8_FILE).is_file() and new.pid == old.pid
        assert flat(new.predict_proba(TEXTS)) == pytest.approx(flat(old.predict_proba(TEXTS)), abs=1e-6)
    finally:
        process.close()


def test_the_scorer_process_exits_when_its_parent_is_killed(process_settings, tmp_path: Path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from finsent.settings import Settings
        from model.scorer_process import ScorerProcess
        if __name__ == "__main__":  # a spawned child imports this file again
            remote = ScorerProcess(Settings(model_dir={str(process_settings.models_path)!r}, device="cpu",
                                            model_threads=1)).load("champion")
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
    wait_for(lambda: process_gone(child), 30, f"scorer process {child} to end with its killed parent")


def test_a_parent_that_exits_with_a_model_still_loaded_ends_and_so_does_its_scorer_process(process_settings,
                                                                                         tmp_path: Path):
    # At exit multiprocessing SIGTERMs the daemonic child, which ignores it, then joins it with no timeout.
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        from finsent.settings import Settings
        from model.scorer_process import ScorerProcess
        if __name__ == "__main__":  # a spawned child imports this file again
            remote = ScorerProcess(Settings(model_dir={str(process_settings.models_path)!r}, device="cpu",
                                            model_threads=1, model_quantize="none")).load("champion")
            print(remote.pid, len(remote.predict_proba(["Profit rose."])), flush=True)
            # returns without remote.close(), the model still loaded
    """), encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        out, _ = parent.communicate(timeout=120)  # a hang, not a speed: it scored in the first seconds
    finally:
        if parent.poll() is None:
            parent.kill()  # its child then reads end-of-file
            parent.wait()
    child, scored = out.split()
    assert parent.returncode == 0 and scored == "1"
    wait_for(lambda: process_gone(int(child)), 30, f"scorer process {child} to end with its parent")


def serve_poisoned(conn, settings):
    """A scorer process whose model dies, as on a segfault, on any batch that holds POISON; and on
    the first batch that holds FLAKY, as a child killed for memory would (the model folder keeps
    the mark, so the next child scores it). Loading a folder marked ``dies-on-load`` kills it too;
    one marked ``hangs-on-load`` never answers.
    A batch that holds BREAK leaves it alive but unable to score, as a CUDA error leaves a GPU
    context: it answers every later batch with the error until a new process starts. A batch that
    holds HANG never gets an answer, as a GPU kernel that never returns. One that holds SLOW takes
    eight forward passes of 0.4 s, each followed by the scorer's heartbeat."""
    from model.scorer_process import PROGRESS

    folders = {}
    broken = False
    while True:
        try:
            action, model_id, *args = conn.recv()
        except EOFError:
            return
        if action == "load":
            if (Path(args[0]) / "dies-on-load").exists():
                os._exit(137)
            if (Path(args[0]) / "hangs-on-load").exists():
                threading.Event().wait()
            folders[model_id] = Path(args[0])
            conn.send(("ok", {"version": "poisoned", "precision": "fp32", "max_length": 128}))
            continue
        texts = args[0]
        flaky_mark = folders[model_id] / "flaky-died"
        if any("POISON" in text for text in texts):
            os._exit(139)
        if any("HANG" in text for text in texts):
            threading.Event().wait()  # never set; the closed pipe goes unread
        if any("SLOW" in text for text in texts):
            for _ in range(8):
                time.sleep(0.4)
                conn.send((PROGRESS, None))
        if any("FLAKY" in text for text in texts) and not flaky_mark.exists():
            flaky_mark.touch()
            os._exit(137)
        broken = broken or any("BREAK" in text for text in texts)
        if broken:
            conn.send(("error", "RuntimeError: CUDA error: an illegal memory access was encountered"))
        else:
            conn.send(("ok", [[0.1, 0.2, 0.7] for _ in texts]))


@pytest.fixture
def poisoned(tmp_path: Path):
    folder = tmp_path / "poisoned-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return Settings(model_dir=tmp_path / "registry"), str(folder)


def test_a_batch_that_kills_the_scorer_process_is_a_crash_and_the_next_batch_scores(poisoned):
    from model.scorer import ScorerCrashed
    from model.scorer_process import ScorerProcess

    settings, folder = poisoned
    restarts: list[int] = []
    remote = ScorerProcess(settings, serve=serve_poisoned, on_restart=lambda: restarts.append(1)).load(folder)
    try:
        # Several texts: not sent again, since the worker halves the batch anyway.
        with pytest.raises(ScorerCrashed, match=r"died \(exit code 139\) on a batch of 2 texts"):
            remote.predict_proba(["fine", "POISON"])
        assert not restarts
        assert remote.predict_proba(["fine", "also fine"]) == [[0.1, 0.2, 0.7]] * 2
        assert len(restarts) == 1
        # One text: sent to a second child before it is blamed.
        with pytest.raises(ScorerCrashed, match=r"died \(exit code 139\) twice on the same text"):
            remote.predict_proba(["POISON"])
        assert len(restarts) == 2
        assert remote.predict_proba(["FLAKY"]) == [[0.1, 0.2, 0.7]]  # the second child scores it
        assert len(restarts) == 4
    finally:
        remote.close()


def test_a_scorer_process_that_does_not_answer_is_killed_and_the_next_batch_scores(poisoned):
    from model.scorer import ScorerCrashed
    from model.scorer_process import ScorerProcess

    settings, folder = poisoned
    restarts: list[int] = []
    settings = settings.model_copy(update={"worker_score_timeout": 0.5})
    process = ScorerProcess(settings, serve=serve_poisoned, on_restart=lambda: restarts.append(1))
    remote = process.load(folder)
    try:
        hung = remote.pid
        with pytest.raises(ScorerCrashed, match=r"went 1.012 s without progress on a batch of 2 texts") as crash:
            remote.predict_proba(["fine", "HANG"])  # 0.5 s, and 2 ms for each token of two windows of 128
        assert crash.value.hung  # the worker scores such a batch's texts one by one, not by halves
        assert process_gone(hung)  # killed, not left holding a model's memory
        assert remote.predict_proba(["fine"]) == [[0.1, 0.2, 0.7]] and len(restarts) == 1
        with pytest.raises(ScorerCrashed, match=r"went 0.756 s without progress twice on the same text"):
            remote.predict_proba(["HANG"])  # sent to a second child before it is blamed
        assert len(restarts) == 2
    finally:
        process.close()
    assert process_gone(remote.pid)


def test_a_batch_that_takes_longer_than_the_limit_is_not_killed_while_it_reports_progress(poisoned):
    from model.scorer_process import ScorerProcess

    settings, folder = poisoned
    restarts: list[int] = []
    settings = settings.model_copy(update={"worker_score_timeout": 2.0})  # 2.256 s without a word, at most
    process = ScorerProcess(settings, serve=serve_poisoned, on_restart=lambda: restarts.append(1))
    remote = process.load(folder)
    try:
        pid = remote.pid
        assert remote.predict_proba(["SLOW and long"]) == [[0.1, 0.2, 0.7]]  # 3.2 s, a heartbeat every 0.4 s
        assert remote.pid == pid and not restarts
    finally:
        process.close()


def test_a_load_that_does_not_answer_is_a_clear_error(poisoned, tmp_path: Path):
    from model.scorer_process import ScorerProcess, ScorerProcessError

    settings, _ = poisoned
    stuck = tmp_path / "stuck-model"
    stuck.mkdir()
    (stuck / "config.json").write_text("{}", encoding="utf-8")
    (stuck / "hangs-on-load").touch()
    process = ScorerProcess(settings, serve=serve_poisoned, start_timeout=0.5)
    with pytest.raises(ScorerProcessError, match=r"did not load .*stuck-model in 0.5 s"):
        process.load(str(stuck))
    assert process_gone(process.pid)


def test_a_model_whose_load_kills_the_process_leaves_the_loaded_one_scoring(poisoned, tmp_path: Path):
    from model.registry import is_held
    from model.scorer_process import ScorerProcess, ScorerProcessError

    settings, folder = poisoned
    restarts: list[int] = []
    process = ScorerProcess(settings, serve=serve_poisoned, on_restart=lambda: restarts.append(1))
    old = process.load(folder)
    heavy = tmp_path / "heavy-model"
    heavy.mkdir()
    (heavy / "config.json").write_text("{}", encoding="utf-8")
    (heavy / "dies-on-load").touch()  # as a child killed for memory while it loads
    try:
        with pytest.raises(ScorerProcessError, match=r"exited while loading .*heavy-model \(exit code 137\)"):
            process.load(str(heavy))
        assert process.folders == [Path(folder)] and not is_held(heavy) and is_held(Path(folder))
        assert old.predict_proba(["fine"]) == [[0.1, 0.2, 0.7]]  # in a new child, which loads the old model only
        assert len(restarts) == 1
    finally:
        process.close()


# POISON kills the process: one death per halving (8, 4 and 2 texts) and two for the text itself, a new
# child after each. BREAK leaves it broken: a new process after the batch, for text 4 (which failed only
# because text 5 broke the process in their half), and twice for text 5 (it breaks the one it is sent to).
# HANG: no halving, since each would wait out the silence limit again; a new process after the batch, then
# the texts one by one, text 5 hanging two processes, and one more for the known-good text that clears the
# model. Either way, the same batch again costs no new process.
@pytest.mark.parametrize(("mark", "reason_has", "restarted"), [
    ("POISON", ("crashed on it", "exit code 139"), 5),
    ("BREAK", ("could not score it", "CUDA error"), 4),
    ("HANG", ("crashed on it", "without progress twice on the same text"), 3),
])
async def test_the_worker_splits_a_failing_batch_down_to_the_text_that_breaks_the_model(poisoned, mark, reason_has,
                                                                                        restarted):
    from prometheus_client import CollectorRegistry

    from finsent.schemas import RawDocument, utc_now
    from model.scorer_process import ScorerProcess
    from stream.metrics import WorkerMetrics
    from stream.model_holder import ModelHolder
    from stream.pipeline import RawBatchPipeline, RawRecord
    from stream.validation import Origin

    settings, folder = poisoned
    if mark == "HANG":
        settings = settings.model_copy(update={"worker_score_timeout": 1.0})
    restarts: list[int] = []
    process = ScorerProcess(settings, serve=serve_poisoned, on_restart=lambda: restarts.append(1))
    holder = ModelHolder(process.load)
    await holder.load_initial(folder)

    async def refuse(*args):
        raise AssertionError("nothing is sent while scoring")

    pipeline = RawBatchPipeline(settings, holder=holder, sink=None, metrics=WorkerMetrics(CollectorRegistry()),
                                send_dead_letter=refuse, send_scored=refuse, send_window_event=refuse)
    texts = [f"Profit rose {i}%." for i in range(8)]
    texts[5] = f"{mark} in a headline"
    docs = [RawDocument(id=f"d{i}", source="s", text=t, ingested_at=utc_now()) for i, t in enumerate(texts)]
    records = [RawRecord(b"k", d.model_dump_json().encode(), Origin("t.raw", 0, i)) for i, d in enumerate(docs)]
    try:
        batch = await pipeline.score(records)
        assert len(restarts) == restarted
        again = await pipeline.score(records)  # the same texts once more, as a repost or a DLQ replay brings them
    finally:
        holder.close()
    assert [d.scored.id for d in batch.docs] == ["d0", "d1", "d2", "d3", "d4", "d6", "d7"]
    assert all(d.scored.sentiment.label == "positive" for d in batch.docs)
    [(record, stage, reason)] = batch.rejected
    assert record.origin.offset == 5 and stage == "score"
    assert all(part in reason for part in reason_has)
    # The text the model failed on is remembered: the second batch costs no new scorer process.
    assert [d.scored.id for d in again.docs] == ["d0", "d1", "d2", "d3", "d4", "d6", "d7"]
    assert again.rejected == [(record, "score", f"{reason} (the same text before; not scored again)")]
    assert len(restarts) == restarted


def test_renew_starts_a_new_scorer_process_with_the_same_models(poisoned, tmp_path: Path):
    from model.scorer_process import ScorerProcess, ScorerProcessError

    settings, folder = poisoned
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}", encoding="utf-8")
    restarts: list[int] = []
    process = ScorerProcess(settings, serve=serve_poisoned, on_restart=lambda: restarts.append(1))
    first, second = process.load(folder), process.load(str(other))
    try:
        pid = first.pid
        with pytest.raises(ScorerProcessError, match="CUDA error"):
            first.predict_proba(["BREAK it"])
        with pytest.raises(ScorerProcessError, match="CUDA error"):
            second.predict_proba(["fine"])  # the process stays broken, alive
        assert first.pid == pid
        first.renew()
        assert first.pid != pid and process_gone(pid) and len(restarts) == 1
        assert second.predict_proba(["fine"]) == [[0.1, 0.2, 0.7]]  # both models were loaded again
        assert first.predict_proba(["fine"]) == [[0.1, 0.2, 0.7]]
    finally:
        process.close()
