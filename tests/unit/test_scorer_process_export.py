"""The worker's scorer process exports a hot swap's model to ONNX apart (model.onnx_runtime.export_apart) before
loading it; a worker that stops meanwhile (its models closed) kills that export and starts no scorer process."""

from __future__ import annotations

import json

import pytest

from finsent.settings import Settings
from model import onnx_runtime
from model.registry import VersionHold
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
