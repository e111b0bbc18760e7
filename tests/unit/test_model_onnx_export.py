"""model.onnx_runtime.export_apart: the export in a spawned process that a stop or a time limit kills, its partial
files removed. The exports here are stand-ins (module-level, so the spawned process imports them): one that writes a
partial file and hangs, one that raises, one whose process dies."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from model.onnx_runtime import CACHE_DIR, ExportFailed, ExportStopped, export_apart


def writes_then_hangs(folder: str) -> None:
    """As onnx_file under way: a partial file in the cache, named after this process; then torch's long export."""
    partial = Path(folder) / CACHE_DIR / f".export-{os.getpid()}-stand-in"
    partial.mkdir(parents=True)
    (partial / "raw.onnx").write_bytes(b"half")
    time.sleep(600)


def exports(folder: str) -> None:
    (Path(folder) / CACHE_DIR).mkdir()
    (Path(folder) / CACHE_DIR / "done.onnx").write_bytes(b"whole")


def raises(folder: str) -> None:
    raise ValueError(f"{folder}: forward() does not take ['input_ids'] as its first parameters")


def dies(folder: str) -> None:
    os._exit(3)  # as the kernel's OOM killer would leave it: no word on the pipe


def partial_written(folder: Path) -> bool:
    return any((folder / CACHE_DIR).glob(".export-*/raw.onnx"))


def test_a_stop_kills_the_export_under_way_and_removes_its_partial_files(tmp_path) -> None:
    # In process, torch.onnx.export runs to its end (6-10 s for MiniLM here) whatever the stop.
    with pytest.raises(ExportStopped, match="asked to stop: killed after"):
        export_apart(tmp_path, should_stop=lambda: partial_written(tmp_path), timeout=120, export=writes_then_hangs)
    assert list((tmp_path / CACHE_DIR).iterdir()) == []


def test_an_export_out_of_time_is_killed_too(tmp_path) -> None:
    with pytest.raises(ExportStopped, match="took over 0 s"):
        export_apart(tmp_path, timeout=0, export=writes_then_hangs)
    assert not partial_written(tmp_path)


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
