"""Registry file operations on stand-in model folders (no weights needed for these rules)."""

import contextlib
import json
import shutil
import threading

import pytest

from model.registry import Registry, RegistryError


def _model_folder(tmp_path, name, size=200_000):
    folder = tmp_path / "src" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": name}))
    (folder / "model.safetensors").write_bytes(name.encode() * (size // len(name)))
    return folder


def _register(reg, tmp_path, name, **meta):
    return reg.register(_model_folder(tmp_path, name), {"base_model": "b", "labels": ["negative", "neutral", "positive"]} | meta)


def test_register_list_get_and_path(tmp_path):
    reg = Registry(tmp_path / "models")
    assert reg.list() == [] and reg.champion() is None
    v1 = _register(reg, tmp_path, "one", metrics={"validation": {"accuracy": 0.5}}, data_fingerprint="sha256:x")
    meta = reg.get(v1)
    assert meta["version"] == v1 and meta["metrics"]["validation"]["accuracy"] == 0.5
    assert meta["created_at"].endswith("+00:00") and meta["parent_version"] is None and meta["champion"] is False
    assert (reg.path(v1) / "model.safetensors").is_file()
    assert reg.path(str(reg.path(v1))) == reg.path(v1)  # a folder path is accepted as is
    assert [m["version"] for m in reg.list()] == [v1]
    with pytest.raises(RegistryError, match="no champion"):
        reg.path("champion")
    with pytest.raises(RegistryError):
        reg.get("v20000101-000000-0000")
    with pytest.raises(RegistryError):
        reg.register(tmp_path, {})  # not a model folder


def test_promote_rollback_and_history(tmp_path):
    reg = Registry(tmp_path / "models")
    v1, v2, v3 = (_register(reg, tmp_path, n) for n in ("one", "two", "three"))
    with pytest.raises(RegistryError):
        reg.rollback()
    reg.promote(v1)
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback()
    reg.promote(v2)
    reg.promote(v3)
    assert reg.champion() == v3 and reg.get("champion")["champion"] is True
    assert reg.get(v2)["status"] == "retired"
    assert reg.rollback().champion == v2 and reg.champion() == v2
    assert reg.get(v3)["status"] == "rolled_back" and reg.get(v2)["status"] == "champion"
    assert reg.rollback().champion == v1
    assert reg.path("champion") == reg.path(v1)


def test_update_metadata_keeps_other_fields(tmp_path):
    reg = Registry(tmp_path / "models")
    v = _register(reg, tmp_path, "one", data_fingerprint="sha256:abc")
    reg.update_metadata(v, metrics={"eval": {"x": 1}})
    meta = reg.get(v)
    assert meta["metrics"] == {"eval": {"x": 1}} and meta["data_fingerprint"] == "sha256:abc"


def test_readers_never_see_a_missing_or_partial_champion(tmp_path):
    reg = Registry(tmp_path / "models")
    versions = [_register(reg, tmp_path, f"m{i}") for i in range(3)]
    reg.promote(versions[0])
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader():
        reader_reg = Registry(tmp_path / "models")
        while not stop.is_set():
            try:
                folder = reader_reg.path("champion")
                name = json.loads((folder / "config.json").read_text())["name"]
                if (folder / "model.safetensors").stat().st_size != len(name) * (200_000 // len(name)):
                    problems.append(f"partial weights in {folder}")
                json.loads((folder / "metadata.json").read_text())
                reads[0] += 1
            except Exception as exc:  # any failure to read the champion is the bug we test for
                problems.append(repr(exc))

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(150):
            reg.promote(versions[i % 3])
            if i % 7 == 3:  # right after promoting a different version, so there is one to go back to
                reg.rollback()
            if i % 25 == 0:  # registering alongside must not disturb readers either
                versions.append(_register(reg, tmp_path, f"late{i}"))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert problems[:3] == []
    assert reads[0] > 0


def test_promote_with_expected_leaves_a_changed_champion_alone(tmp_path):
    from model.registry import ChampionChanged

    reg = Registry(tmp_path / "models")
    compared_with, meanwhile, challenger = (_register(reg, tmp_path, n) for n in ("one", "two", "three"))
    reg.promote(compared_with)
    reg.promote(meanwhile)  # promoted by hand while the challenger trained
    with pytest.raises(ChampionChanged) as err:
        reg.promote(challenger, expected=compared_with)
    assert (err.value.expected, err.value.actual) == (compared_with, meanwhile)
    assert reg.champion() == meanwhile and reg.get(challenger)["status"] == "registered"
    assert [h["version"] for h in reg.history()] == [compared_with, meanwhile]
    reg.promote(challenger, expected=meanwhile)
    assert reg.champion() == challenger and reg.get(meanwhile)["status"] == "retired"


def test_promote_checks_the_version_under_the_lock(tmp_path):
    reg = Registry(tmp_path / "models")
    champion, doomed = _register(reg, tmp_path, "one"), _register(reg, tmp_path, "two")
    reg.promote(champion)
    real_lock = reg._locked

    @contextlib.contextmanager
    def pruned_before_the_lock():
        shutil.rmtree(reg.versions_dir / doomed)  # what a prune in another process does in between
        with real_lock():
            yield

    reg._locked = pruned_before_the_lock
    with pytest.raises(RegistryError, match="no model version"):
        reg.promote(doomed)
    assert reg.champion() == champion and reg.exists(champion)


def _corrupt(reg, version):
    meta_file = reg.versions_dir / version / "metadata.json"
    meta_file.write_text('{"version": "')  # cut short, as by a full disk or a hand edit
    return meta_file


def _state(reg):
    """The pointer and every metadata file, byte for byte."""
    return reg.pointer_file.read_bytes(), {p.name: (p / "metadata.json").read_bytes()
                                           for p in reg.versions_dir.iterdir()}


@pytest.mark.parametrize("broken", ["new", "current"])
def test_promote_reads_both_metadata_files_before_the_pointer_moves(tmp_path, broken):
    reg = Registry(tmp_path / "models")
    current, new = _register(reg, tmp_path, "one"), _register(reg, tmp_path, "two")
    reg.promote(current)
    meta_file = _corrupt(reg, new if broken == "new" else current)
    before = _state(reg)
    with pytest.raises(RegistryError, match=f"unreadable metadata of .*{meta_file}"):
        reg.promote(new)
    assert _state(reg) == before and reg.champion() == current


@pytest.mark.parametrize("broken", ["target", "current"])
def test_rollback_reads_both_metadata_files_before_the_pointer_moves(tmp_path, broken):
    reg = Registry(tmp_path / "models")
    target, current = _register(reg, tmp_path, "one"), _register(reg, tmp_path, "two")
    reg.promote(target)
    reg.promote(current)
    meta_file = _corrupt(reg, target if broken == "target" else current)
    before = _state(reg)
    with pytest.raises(RegistryError, match=f"unreadable metadata of .*{meta_file}"):
        reg.rollback()
    assert _state(reg) == before and reg.champion() == current


def test_rollback_from_a_champion_whose_folder_is_gone(tmp_path):
    reg = Registry(tmp_path / "models")
    target, current = _register(reg, tmp_path, "one"), _register(reg, tmp_path, "two")
    reg.promote(target)
    reg.promote(current)
    shutil.rmtree(reg.versions_dir / current)
    assert reg.rollback().champion == target and reg.get(target)["status"] == "champion"


def test_list_leaves_out_a_version_with_unreadable_metadata(tmp_path, caplog):
    reg = Registry(tmp_path / "models")
    good, bad = _register(reg, tmp_path, "one"), _register(reg, tmp_path, "two")
    meta_file = _corrupt(reg, bad)
    versions, problems = reg.scan()
    assert [m["version"] for m in versions] == [good] and len(problems) == 1 and str(meta_file) in problems[0]
    with caplog.at_level("WARNING", logger="model.registry"):
        assert [m["version"] for m in reg.list()] == [good]
    assert str(meta_file) in caplog.text
    (reg.versions_dir / good / "metadata.json").write_text("[1, 2]")  # JSON, but not an object
    with pytest.raises(RegistryError, match="not an object"):
        reg.get(good)


def test_model_list_says_which_version_it_left_out(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from finsent.cli import app

    reg = Registry(tmp_path / "models")
    good, bad = _register(reg, tmp_path, "one"), _register(reg, tmp_path, "two")
    _corrupt(reg, bad)
    monkeypatch.setenv("FINSENT_MODEL_DIR", str(reg.root))
    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["model", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert [m["version"] for m in json.loads(result.stdout)] == [good]
    assert f"warning: left out unreadable metadata of {bad}" in result.stderr


def test_each_champion_move_gets_the_next_sequence_number(tmp_path):
    from model.registry import ChampionChanged, Pointer

    reg = Registry(tmp_path / "models")
    v1, v2, v3 = (_register(reg, tmp_path, n) for n in ("one", "two", "three"))
    assert reg.pointer() == Pointer(None, 0, None)  # no champion yet
    first = reg.promote(v1)  # the first model is a move too
    assert (first.champion, first.sequence) == (v1, 1) and len(first.registry_id) == 16
    assert reg.promote(v2) == Pointer(v2, 2, first.registry_id)
    assert reg.promote(v2) == Pointer(v2, 2, first.registry_id)  # the champion again: nothing moves
    with pytest.raises(ChampionChanged):
        reg.promote(v3, expected=v1)  # refused: no number spent
    assert reg.rollback() == Pointer(v1, 3, first.registry_id)
    assert reg.promote(v3, expected=v1) == Pointer(v3, 4, first.registry_id)
    assert reg.pointer() == Pointer(v3, 4, first.registry_id) == Registry(tmp_path / "models").pointer()
    stored = json.loads(reg.pointer_file.read_text())
    assert (stored["sequence"], stored["registry_id"]) == (4, first.registry_id)
    other = Registry(tmp_path / "other")
    assert other.promote(_register(other, tmp_path, "four")).registry_id != first.registry_id


def test_moves_from_many_writers_get_one_number_each_in_the_order_they_happened(tmp_path):
    reg = Registry(tmp_path / "models")
    versions = [_register(reg, tmp_path, f"m{i}") for i in range(8)]
    moves = []

    def promote(version):
        moves.append(Registry(tmp_path / "models").promote(version))  # another process's registry object

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(m.sequence for m in moves) == list(range(1, 9))
    last = max(moves, key=lambda m: m.sequence)
    assert reg.pointer() == last  # the highest number is the champion the registry names
    assert [h["version"] for h in reg.history()] == [m.champion for m in sorted(moves, key=lambda m: m.sequence)]


def test_a_pointer_an_older_release_wrote_counts_from_zero(tmp_path):
    from model.registry import Pointer

    reg = Registry(tmp_path / "models")
    v1, v2 = _register(reg, tmp_path, "one"), _register(reg, tmp_path, "two")
    reg.pointer_file.write_text(json.dumps({"champion": v1, "history": [{"version": v1, "promoted_at": "x"}]}))
    assert reg.pointer() == Pointer(v1, 0, None)
    assert reg.promote(v1).control_fields() == {}  # announcing it again: no number to give
    moved = reg.promote(v2)
    assert moved.sequence == 1 and moved.registry_id is not None
    assert moved.control_fields() == {"sequence": 1, "registry_id": moved.registry_id}


@pytest.mark.parametrize("pointer, what", [
    ({"champion": None, "history": [], "sequence": "3"}, "sequence is '3'"),
    ({"champion": None, "history": [], "sequence": -1}, "sequence is -1"),
    ({"champion": None, "history": [], "sequence": True}, "sequence is True"),
    ({"champion": None, "history": [], "sequence": 1, "registry_id": "a b"}, "registry_id is 'a b'"),
    (["champion"], "a list, not an object"),
])
def test_an_unreadable_pointer_is_named(tmp_path, pointer, what):
    reg = Registry(tmp_path / "models")
    v1 = _register(reg, tmp_path, "one")
    reg.pointer_file.write_text(json.dumps(pointer))
    for read in (reg.pointer, lambda: reg.promote(v1)):
        with pytest.raises(RegistryError, match=f"unreadable champion pointer {reg.pointer_file}: {what}"):
            read()
