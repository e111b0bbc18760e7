"""`finsent model train --promote` makes its new version champion as `finsent model promote` does: the ONNX export the
workers need first (onnx-int8), then the move, then the control message that tells the running workers, with the
move's number; exit 4 when Kafka does not take it. Before, it moved the pointer and nothing else, and exited 0: no
export (each onnx-int8 worker built its own on the hot swap), no message (running workers kept the old champion until
they restarted, silently). In each case the output stays what it was: the last line is the version (with --json,
its object) before any non-zero exit.

Each test trains the packaged MiniLM for one step on the handmade rows of tests/unit/test_model_calibrated.py (about
5 s). Kafka is a stand-in for ``stream.control.publish``, as in tests/unit/test_promote_retrain_stops.py; the ONNX
export is a stand-in for ``export_apart`` (a real one costs a minute here; tests/unit/test_model_onnx_export.py).
"""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from finsent.cli import app
from model.registry import Registry
from tests.unit.test_model_calibrated import ROWS
from tests.unit.test_one_shot_stops import STOPPED, export_stopped_by_sigterm, handlers_put_back  # noqa: F401
from tests.unit.test_retrain_promotion import _version


@pytest.fixture
def registry(tmp_path) -> Registry:
    """The registry the command trains into, with a champion already (its move is number 1)."""
    registry = Registry(tmp_path / "models")
    registry.promote(_version(registry, tmp_path, "earlier"))
    return registry


def _train(registry: Registry, tmp_path, *options: str, quantize: str = "none"):
    data = tmp_path / "handmade.csv"
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *ROWS])
    env = {"FINSENT_MODEL_DIR": str(registry.root), "FINSENT_STATE_DIR": str(tmp_path / "state"),
           "FINSENT_ELASTICSEARCH_URL": "http://127.0.0.1:9", "FINSENT_MODEL_QUANTIZE": quantize}
    args = ["model", "train", "--data", str(data), "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
            "--threads", "1", "--no-progress", "--promote", *options]
    return CliRunner().invoke(app, args, env=env)


def _trained(registry: Registry, earlier: str) -> str:
    [version] = [p.name for p in registry.versions_dir.iterdir() if p.name != earlier]
    return version


def test_a_train_promote_builds_the_export_then_moves_then_tells_the_workers(registry, tmp_path, monkeypatch):
    earlier = registry.champion()
    exported: list[tuple[str, str | None]] = []
    sent = []
    monkeypatch.setattr("model.onnx_runtime.export_apart",
                        lambda folder, **kwargs: exported.append((folder.name, registry.champion())))
    monkeypatch.setattr("stream.control.publish", lambda settings, message: sent.append(message))
    result = _train(registry, tmp_path, quantize="onnx-int8")
    assert result.exit_code == 0, result.output
    version = _trained(registry, earlier)
    assert exported == [(version, earlier)]  # built while the earlier model was still champion
    moved = registry.pointer()
    assert moved.champion == version and moved.sequence == 2
    [message] = sent
    assert (message.action, message.model_version, message.model_path) == ("promote", version,
                                                                           str(registry.path(version)))
    assert (message.sequence, message.registry_id) == (moved.sequence, moved.registry_id)
    assert result.stdout.splitlines()[-2:] == [f"promoted {version} to champion", version]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_train_promote_whose_workers_kafka_cannot_reach_exits_4_after_its_output(registry, tmp_path, monkeypatch,
                                                                                   as_json):
    def away(settings, message):  # a closed port costs 30 s of bootstrap tries
        raise ConnectionError("Kafka away")

    earlier = registry.champion()
    monkeypatch.setattr("stream.control.publish", away)
    result = _train(registry, tmp_path, *(["--json"] if as_json else []))
    assert result.exit_code == 4, result.output  # moved (not 1), but the workers were not told (not 0)
    version = _trained(registry, earlier)
    assert registry.champion() == version  # the move stands
    if as_json:
        said = json.loads(result.stdout)
        assert (said["version"], said["promoted"]) == (version, True)
    else:
        assert result.stdout.splitlines()[-1] == version
    assert (f"warning: could not tell workers on finsent.control (Kafka away); they load the champion when they "
            f"restart, or `finsent model promote {version}` tells them") in result.stderr


def test_a_train_promote_told_to_no_one_exits_0(registry, tmp_path, monkeypatch):
    earlier = registry.champion()
    monkeypatch.setattr("stream.control.publish", lambda *_: pytest.fail("workers told with --no-notify"))
    result = _train(registry, tmp_path, "--no-notify")
    assert result.exit_code == 0, result.output
    version = _trained(registry, earlier)
    assert registry.champion() == version and result.stdout.splitlines()[-1] == version
    assert "warning" not in result.stderr


def test_a_train_promote_stopped_while_the_export_is_built_keeps_the_version_registered_only(registry, tmp_path,
                                                                                            monkeypatch):
    earlier = registry.champion()
    exported: list[str] = []
    monkeypatch.setattr("model.onnx_runtime.export_apart", export_stopped_by_sigterm(exported))
    monkeypatch.setattr("stream.control.publish", lambda *_: pytest.fail("workers told of a promotion not made"))
    result = _train(registry, tmp_path, quantize="onnx-int8")
    assert result.exit_code == STOPPED, result.output
    version = _trained(registry, earlier)
    assert exported == [version] and registry.champion() == earlier
    assert result.stdout.splitlines()[-1] == version and "promoted" not in result.stdout
    assert (f"finsent: stopped by SIGTERM: {version} is registered but not promoted: stopped while its ONNX export was "
            f"built; the champion is still {earlier}; `finsent model promote {version}` makes it champion"
            ) in result.stderr
