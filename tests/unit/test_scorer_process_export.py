"""The worker's scorer process exports a hot swap's model to ONNX apart (model.onnx_runtime.export_apart) before
loading it; a worker that stops meanwhile (its models closed) kills that export and starts no scorer process, and an
export that fails fails the load rather than run again in the scorer process."""

from __future__ import annotations

import json

import pytest

from finsent.settings import Settings
from model import onnx_runtime
from model.registry import VersionHold, is_held
from model.scorer_process import HostedModel, ScorerProcess, ScorerProcessError


def folder(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"name": name}))
    return path


def test_a_worker_that_stops_during_a_hot_swaps_export_kills_it_and_starts_no_scorer(tmp_path, monkeypatch):
    settings = Settings(state_dir=tmp_path, model_dir=tmp_path / "models", model_quantize="onnx-int8")
    process = ScorerProcess(settings)
    old = folder(tmp_path, "old")
    scoring = process._models[1] = HostedModel(process, 1, old, "old", "int8", 128, VersionHold(old))
    started: list[str] = []
    killed: list[str] = []  # exports the stop reached

    def start() -> None:
        started.append("a scorer process")
        raise ScorerProcessError("started a scorer process")

    def export(path, *, should_stop=None, timeout=None):
        scoring.close()  # the worker stops (ModelHolder.close) while the new model exports, seconds to minutes
        if should_stop is not None and should_stop():
            killed.append(path.name)
            raise onnx_runtime.ExportStopped(f"the export of {path} asked to stop")
        # else it runs to its end (up to the time limit), and the load goes on

    monkeypatch.setattr(process, "_start", start)
    monkeypatch.setattr(onnx_runtime, "export_apart", export)
    with pytest.raises(ScorerProcessError, match="closed while .* exported"):
        process.load(folder(tmp_path, "new"))
    assert started == [] and process.pid is None
    assert killed == ["new"]  # the stop reached the export, not only the check after it


@pytest.mark.parametrize("failure", [
    onnx_runtime.ExportFailed("ONNX export of new failed: its process died (exit code -9)"),
    onnx_runtime.ExportTimedOut("the export of new took over 600 s: killed after 600.2 s"),
])
def test_a_hot_swaps_export_that_fails_fails_the_load_and_keeps_the_model(tmp_path, monkeypatch, failure):
    # The load exported the model in the scorer process instead, holding the lock that every batch (and the worker's
    # stop) waits for, as long again: seconds for MiniLM, up to the start timeout (600 s) for a hung export.
    settings = Settings(state_dir=tmp_path, model_dir=tmp_path / "models", model_quantize="onnx-int8")
    process = ScorerProcess(settings)
    old = folder(tmp_path, "old")
    process._models[1] = HostedModel(process, 1, old, "old", "int8", 128, VersionHold(old))
    loads: list[str] = []

    def export(path, *, should_stop=None, timeout=None):
        raise failure

    monkeypatch.setattr(onnx_runtime, "export_apart", export)
    monkeypatch.setattr(process, "_load_started", lambda model_id, path: loads.append(path.name))
    new = folder(tmp_path, "new")
    with pytest.raises(ScorerProcessError) as raised:
        process.load(new)
    assert str(raised.value).startswith(f"{new} not loaded: {failure}; not exported in the scorer process")
    assert "finsent model promote VERSION" in str(raised.value)
    assert loads == [] and process.folders == [old]  # the old model scores on
    assert not is_held(new)
