"""model.onnx_runtime.export_apart: the export in a spawned process that a stop or a time limit kills, its partial
files removed. The exports here are stand-ins (module-level, so the spawned process imports them): one that writes a
partial file and hangs, one that raises, one whose process dies."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from model.onnx_runtime import CACHE_DIR, ExportFailed, ExportStopped, ExportTimedOut, export_apart
from tests.waiting import process_gone, wait_for


def writes_then_hangs(folder: str) -> None:
    """As onnx_file under way: a partial file in the cache, named after this process; then torch's long export."""
    partial = Path(folder) / CACHE_DIR / f".export-{os.getpid()}-stand-in"
    partial.mkdir(parents=True)
    (partial / "raw.onnx").write_bytes(b"half")
    time.sleep(600)


def exports(folder: str) -> None:
    (Path(folder) / CACHE_DIR).mkdir(exist_ok=True)
    (Path(folder) / CACHE_DIR / "done.onnx").write_bytes(b"whole")


def exports_after_half_a_minute(folder: str) -> None:
    """A hung export that ends after all: a retrain without a time limit waited for it, then promoted."""
    time.sleep(30)
    exports(folder)


def raises(folder: str) -> None:
    raise ValueError(f"{folder}: forward() does not take ['input_ids'] as its first parameters")


def dies(folder: str) -> None:
    os._exit(3)  # as the kernel's OOM killer would leave it: no word on the pipe


def writes_a_temporary_file_then_hangs(folder: str) -> None:
    """As the ONNX optimiser and quantiser do (a model of up to a few hundred MB in tempfile's folder), then hangs."""
    scratch = tempfile.mkdtemp()
    (Path(scratch) / "optimised.onnx").write_bytes(b"half")
    (Path(folder) / "scratch.txt").write_text(scratch)
    time.sleep(600)


def says_its_pid_then_hangs(folder: str) -> None:
    (Path(folder) / "pid.txt").write_text(str(os.getpid()))
    writes_then_hangs(folder)


def exports_and_waits(folder: str) -> None:
    """The retrain's process: killed (SIGKILL, the OOM killer) while its export runs."""
    export_apart(folder, export=says_its_pid_then_hangs)


def marks_then_dies(folder: str) -> None:
    """Its process ends (as the OOM killer would leave it) just as its parent is asked to stop."""
    (Path(folder) / "stop.txt").write_text("stop")
    os._exit(3)


def exports_in_a_daemon_thread_and_exits(folder: str) -> None:
    """A process that exits while a daemon thread of its waits for an export under way."""
    import threading

    threading.Thread(target=export_apart, args=(folder,), kwargs={"export": says_its_pid_then_hangs},
                     daemon=True).start()
    wait_for(lambda: partial_written(Path(folder)), 120, "the export under way", every=0.1)


def partial_written(folder: Path) -> bool:
    return any((folder / CACHE_DIR).glob(".export-*/raw.onnx"))


def test_a_stop_kills_the_export_under_way_and_removes_its_partial_files(tmp_path) -> None:
    # In process, torch.onnx.export runs to its end (6-10 s for MiniLM here) whatever the stop.
    with pytest.raises(ExportStopped, match="asked to stop: killed after"):
        export_apart(tmp_path, should_stop=lambda: partial_written(tmp_path), timeout=120, export=writes_then_hangs)
    assert list((tmp_path / CACHE_DIR).iterdir()) == []


def test_an_export_out_of_time_is_killed_too(tmp_path) -> None:
    with pytest.raises(ExportTimedOut, match="took over 0 s"):  # an ExportStopped, for the worker's scorer process
        export_apart(tmp_path, timeout=0, export=writes_then_hangs)
    # Killed before it could write anything; the clean-up after a kill is the stop's, tested above.


def test_no_export_starts_once_asked_to_stop(tmp_path) -> None:
    with pytest.raises(ExportStopped, match="stopped before the export"):
        export_apart(tmp_path, should_stop=lambda: True, export=writes_then_hangs)
    assert not (tmp_path / CACHE_DIR).exists()


def test_an_export_that_fails_says_why(tmp_path) -> None:
    with pytest.raises(ExportFailed, match=r"failed: ValueError: .*forward\(\) does not take"):
        export_apart(tmp_path, should_stop=lambda: False, export=raises)
    with pytest.raises(ExportFailed, match=r"its process died \(exit code 3\)"):
        export_apart(tmp_path, export=dies)


def test_a_finished_export_returns(tmp_path) -> None:
    export_apart(tmp_path, should_stop=lambda: False, export=exports)
    assert (tmp_path / CACHE_DIR / "done.onnx").read_bytes() == b"whole"


def test_a_killed_export_leaves_no_temporary_file_outside_the_model_folder(tmp_path) -> None:
    marker = tmp_path / "scratch.txt"
    with pytest.raises(ExportStopped):
        export_apart(tmp_path, should_stop=marker.exists, timeout=120, export=writes_a_temporary_file_then_hangs)
    scratch = Path(marker.read_text())
    try:
        assert not scratch.exists()  # it was in /tmp, where nothing removed it
        assert list((tmp_path / CACHE_DIR).iterdir()) == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_export_ends_with_the_process_that_asked_for_it(tmp_path) -> None:
    parent = multiprocessing.get_context("spawn").Process(target=exports_and_waits, args=(str(tmp_path),))
    parent.start()
    pid_file = tmp_path / "pid.txt"
    try:
        wait_for(lambda: pid_file.exists() and partial_written(tmp_path), 120, "the export under way", every=0.1)
        os.kill(parent.pid, signal.SIGKILL)  # no finally runs there: the child is on its own
        parent.join()
        child = int(pid_file.read_text())
        wait_for(lambda: process_gone(child), 30, "the export to end with the process that asked for it",
                 every=0.1)
        assert not partial_written(tmp_path)
    finally:
        if parent.is_alive():
            parent.kill()
        if pid_file.exists() and not process_gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_sigterm_to_the_family_leaves_the_export_to_its_parent(tmp_path) -> None:
    # `finsent down` and service managers SIGTERM every process of the family. The export died of it at once, and its
    # parent, which acted on its own SIGTERM a moment later, read a failed export: the worker exported the model in its
    # scorer process instead (scoring and the stop waited for it), the scheduler recorded the retrain "failed".
    pid_file, signalled = tmp_path / "pid.txt", []

    def stop_comes() -> bool:
        if signalled:  # the parent's own handler, a poll later
            return True
        if pid_file.exists() and partial_written(tmp_path):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            signalled.append(True)
        return False

    with pytest.raises(ExportStopped, match="asked to stop: killed after"):
        export_apart(tmp_path, should_stop=stop_comes, timeout=120, export=says_its_pid_then_hangs, poll_s=0.5)
    assert signalled and process_gone(int(pid_file.read_text()))
    assert not partial_written(tmp_path)


def test_an_export_that_ends_as_a_stop_is_asked_for_is_stopped_not_failed(tmp_path) -> None:
    # Read as a failure, a hot swap's load exported in the scorer process and a retrain was recorded "failed".
    with pytest.raises(ExportStopped, match=r"asked to stop; its process had ended: its process died \(exit code 3\)"):
        export_apart(tmp_path, should_stop=(tmp_path / "stop.txt").exists, export=marks_then_dies, poll_s=5)


def test_a_process_that_exits_while_a_thread_of_its_waits_for_an_export_kills_it(tmp_path) -> None:
    # The export ignores SIGTERM, with which multiprocessing ends daemon children at exit before joining them: the
    # exit would wait for the whole export.
    parent = multiprocessing.get_context("spawn").Process(target=exports_in_a_daemon_thread_and_exits,
                                                          args=(str(tmp_path),))
    parent.start()
    try:
        wait_for(lambda: not parent.is_alive(), 120, "the process to exit", every=0.1)
        child = int((tmp_path / "pid.txt").read_text())
        assert process_gone(child) and not partial_written(tmp_path)
    finally:
        if parent.is_alive():
            parent.kill()
        if (tmp_path / "pid.txt").exists() and not process_gone(int((tmp_path / "pid.txt").read_text())):
            os.kill(int((tmp_path / "pid.txt").read_text()), signal.SIGKILL)
