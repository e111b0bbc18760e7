"""Where the first model and a retrain find their original labelled data (finsent.training_data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finsent import training_data
from finsent.settings import Settings
from finsent.training_data import TrainingDataError, find_training_data
from retrain.golden import data_paths


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "labels"
    (folder / "news").mkdir(parents=True)
    for name in ("news/train.csv", "train_extra.jsonl", "test.csv", "news/validation.csv", "notes.txt"):
        (folder / name).write_text("text,label\n", encoding="utf-8")
    return folder


def test_a_folder_gives_its_training_files_only(tmp_path):
    folder = _folder(tmp_path)
    found = find_training_data([folder], tmp_path / "copies")
    assert [p.relative_to(folder).as_posix() for p in found] == ["news/train.csv", "train_extra.jsonl"]


def test_retraining_replays_the_same_files_as_the_first_model(tmp_path):
    folder = _folder(tmp_path)
    settings = Settings(state_dir=tmp_path / "state", train_data=str(folder))
    assert data_paths(settings) == find_training_data(settings.train_data_paths, tmp_path / "copies")
    own = Settings(state_dir=tmp_path / "state", train_data=str(tmp_path), retrain_data=str(folder / "test.csv"))
    assert data_paths(own) == [folder / "test.csv"]  # a file named is used whatever its name


def test_retraining_without_settings_finds_the_shared_data(tmp_path):
    if not training_data.SHARED_DATA.is_dir():
        pytest.skip("no ../shared/data beside the project")
    found = data_paths(Settings(state_dir=tmp_path / "state"))
    assert found and all(p.name.startswith("train") and training_data.SHARED_DATA in p.parents for p in found)


def test_retraining_never_downloads_and_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setattr(training_data, "SHARED_DATA", tmp_path / "absent")
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(TrainingDataError, match="FINSENT_RETRAIN_DATA nor FINSENT_TRAIN_DATA is set"):
        data_paths(settings)
    copies = training_data.download_dir(settings.state_dir)
    copies.mkdir(parents=True)
    for path in training_data._public_copies(copies):
        path.write_text("text,label\n", encoding="utf-8")
    assert data_paths(settings) == training_data._public_copies(copies)  # what the first model downloaded


def test_errors_name_the_setting_they_come_from(tmp_path):
    settings = Settings(state_dir=tmp_path / "state", retrain_data=f"{tmp_path / 'missing'}")
    with pytest.raises(TrainingDataError, match=r"^FINSENT_RETRAIN_DATA: .*missing does not exist"):
        data_paths(settings)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingDataError, match="FINSENT_RETRAIN_DATA names no train"):
        data_paths(Settings(state_dir=tmp_path / "state", retrain_data=str(empty)))
    with pytest.raises(TrainingDataError, match="FINSENT_TRAIN_DATA names no train"):
        find_training_data([empty], tmp_path / "copies")
