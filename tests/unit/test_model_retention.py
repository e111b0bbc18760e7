"""Which versions a prune keeps (model.retention) and what it does to a registry folder."""

import pytest

from model.onnx_runtime import FP32_FILE, INT8_FILE
from model.registry import Registry, RegistryError, VersionHold, is_held
from model.retention import rollback_targets, versions_to_prune
from tests.unit.test_model_registry import _register

V = [f"v2026010{i}-000000-000{i}" for i in range(1, 10)]


def test_rollback_targets_are_earlier_champions_nearest_first_each_once():
    history = [V[0], V[2], V[0], V[4], V[6]]
    assert rollback_targets(history, V[6], 2) == [V[4], V[0]]
    assert rollback_targets(history, V[6], 5) == [V[4], V[0], V[2]]
    assert rollback_targets([], None, 3) == []


def test_prune_keeps_champion_newest_and_rollback_targets():
    history = [V[0], V[2], V[3]]  # champion V[3]; rollbacks reach V[2], then V[0]
    assert versions_to_prune(V, V[3], history, keep=2) == [V[1], V[4], V[5], V[6]]
    assert versions_to_prune(V, V[3], history, keep=1) == [V[0], V[1], V[4], V[5], V[6], V[7]]
    assert versions_to_prune(V, None, [], keep=3) == V[:6]
    assert versions_to_prune(V[:2], V[0], [V[0]], keep=5) == []
    with pytest.raises(ValueError, match="at least 1"):
        versions_to_prune(V, V[3], history, keep=0)


def test_registry_prune_deletes_folders_and_stale_exports(tmp_path):
    reg = Registry(tmp_path / "models")
    v = [_register(reg, tmp_path, f"m{i}", version=V[i]) for i in range(6)]
    reg.promote(v[0])
    reg.promote(v[1])  # champion v1; a rollback reaches v0
    cache = reg.path(v[1]) / "onnx"
    cache.mkdir()
    for name in ("model-int8.onnx", INT8_FILE, FP32_FILE):  # the first is an export of an older recipe
        (cache / name).write_bytes(b"x")
    (reg.versions_dir / f".pruned-{v[3]}-dead").mkdir()  # left by an interrupted prune

    assert reg.prune(1, dry_run=True) == [v[2], v[3], v[4]]
    assert len(reg.list()) == 6 and (cache / "model-int8.onnx").exists()

    assert reg.prune(1) == [v[2], v[3], v[4]]
    assert [m["version"] for m in reg.list()] == [v[0], v[1], v[5]]
    assert sorted(p.name for p in reg.versions_dir.iterdir()) == [v[0], v[1], v[5]]
    assert sorted(p.name for p in cache.iterdir()) == sorted([INT8_FILE, FP32_FILE])
    assert reg.prune(1) == []
    assert reg.rollback().champion == v[0]


def test_prune_leaves_a_version_a_running_worker_holds(tmp_path):
    reg = Registry(tmp_path / "models")
    v = [_register(reg, tmp_path, f"m{i}", version=V[i]) for i in range(4)]
    reg.promote(v[3])
    hold = VersionHold(reg.path(v[0]))  # a worker pinned to v0 (model.scorer_process)
    assert is_held(reg.path(v[0])) and not is_held(reg.path(v[1]))
    assert reg.prune(1, dry_run=True) == [v[1], v[2]]
    assert reg.prune(1) == [v[1], v[2]]
    assert reg.exists(v[0])
    hold.release()
    assert not is_held(reg.path(v[0]))
    assert reg.prune(1) == [v[0]]


def test_rollback_to_a_pruned_version_is_a_clear_error(tmp_path):
    reg = Registry(tmp_path / "models")
    v = [_register(reg, tmp_path, f"m{i}", version=V[i]) for i in range(4)]
    for version in v[:3]:
        reg.promote(version)  # champion v2; rollbacks reach v1, then v0
    assert reg.prune(1) == [v[0]]
    assert reg.rollback().champion == v[1]
    with pytest.raises(RegistryError, match=f"previous champion {v[0]} was pruned"):
        reg.rollback()
    assert reg.champion() == v[1]


def test_discard_deletes_one_version_unless_it_is_or_was_champion_or_held(tmp_path):
    from model.registry import VersionInUse

    class Mirror:  # finsent-models
        def __init__(self):
            self.deleted = []

        def index(self, **kwargs):
            pass

        def options(self, **kwargs):
            return self

        def delete(self, index, id):
            self.deleted.append(id)

    reg = Registry(tmp_path / "models", es=Mirror())
    v = [_register(reg, tmp_path, f"m{i}", version=V[i]) for i in range(5)]
    reg.promote(v[0])
    reg.promote(v[1])  # champion v1; a rollback reaches v0
    hold = VersionHold(reg.path(v[2]))
    for version, why in ((v[0], "is or was the champion"), (v[1], "is or was the champion"),
                         (v[2], "a running worker scores with")):
        with pytest.raises(VersionInUse, match=why):
            reg.discard(version)
    reg.discard(v[3])
    assert sorted(p.name for p in reg.versions_dir.iterdir()) == [v[0], v[1], v[2], v[4]]
    with pytest.raises(RegistryError, match=f"no model version '{v[3]}'"):
        reg.discard(v[3])
    hold.release()
    reg.discard(v[2])
    assert [m["version"] for m in reg.list()] == [v[0], v[1], v[4]] and reg.es.deleted == [v[3], v[2]]


@pytest.mark.parametrize("deletion", ["prune", "discard"])
def test_a_hold_taken_while_a_version_is_deleted_finds_it_gone(tmp_path, monkeypatch, deletion):
    # A worker started with `--model VERSION` took its hold between the prune's (or discard's) check for holds and the
    # rename: it held a folder then deleted, and scored from, or restarted its scorer process with, nothing.
    import fcntl
    import threading

    reg = Registry(tmp_path / "models")
    v = [_register(reg, tmp_path, f"m{i}", version=V[i]) for i in range(3)]
    reg.promote(v[2])
    folder = reg.path(v[0])
    taking, shared_lock = threading.Event(), fcntl.flock
    ended: list[object] = []

    def flock(fh, operation):
        if operation == fcntl.LOCK_SH:
            taking.set()  # the worker's hold has its file open: only the lock is left to take
        return shared_lock(fh, operation)

    def worker() -> None:
        try:
            ended.append(VersionHold(folder))
        except FileNotFoundError as exc:
            ended.append(exc)

    rename_out = Registry._rename_out

    def hold_taken_meanwhile(self, version):  # the checks are done; the rename comes next
        if version == v[0]:
            threads.append(threading.Thread(target=worker))
            threads[0].start()
            taking.wait(30)
        rename_out(self, version)

    threads: list[threading.Thread] = []
    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(Registry, "_rename_out", hold_taken_meanwhile)
    if deletion == "prune":
        assert reg.prune(1) == [v[0], v[1]]
    else:
        reg.discard(v[0])
    for thread in threads:
        thread.join(30)
    assert not reg.exists(v[0])
    [hold] = ended
    assert isinstance(hold, FileNotFoundError), "a hold on a deleted version"
    assert "was deleted (a prune or discard of the model registry)" in str(hold)
