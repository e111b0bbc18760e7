"""Model fixtures other parts' tests use: a real, tiny, trained model in a registry.

``tiny_model`` (session): a few training steps of the packaged MiniLM on 64 rows of
``../shared/data`` (32 per data set), registered and promoted to champion in a session tmp
registry. Its accuracy is poor by design; it is a real model with real files and metadata.
``model_registry`` (function): a private copy of that registry, free to mutate.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_ROWS_PER_FILE = 32


@dataclass(frozen=True)
class TinyModel:
    registry_root: Path
    version: str
    path: Path


def tiny_rows(per_file: int = TINY_ROWS_PER_FILE) -> list[tuple[str, str]]:
    """The first rows of each shared training file, read at test time (never copied)."""
    files = sorted(SHARED_DATA.glob("*/train.csv"))
    if not files:
        raise FileNotFoundError(f"no training data under {SHARED_DATA} (expected */train.csv)")
    rows: list[tuple[str, str]] = []
    for path in files:
        with path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh)):
                if n >= per_file:
                    break
                rows.append((row["text"], row["label"]))
    return rows


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from model.registry import Registry
    from model.training import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-registry")
    registry = Registry(root)
    result = train(tiny_rows(), registry=registry, epochs=1, max_steps=4, batch_size=16,
                   val_fraction=0.25, progress=False, threads=1, seed=13)
    registry.promote(result.version)
    return TinyModel(registry_root=root, version=result.version, path=registry.path(result.version))


@pytest.fixture
def model_registry(tiny_model: TinyModel, tmp_path: Path):
    """A fresh registry (``model.registry.Registry``) holding a copy of the tiny model as champion."""
    from model.registry import Registry

    root = tmp_path / "models"
    shutil.copytree(tiny_model.registry_root, root)
    return Registry(root)
