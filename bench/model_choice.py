"""Which model a benchmark measures: the registry's champion, a given one, or a tiny one.

Speed depends on the architecture, not on how well a model was trained, so when the
registry has no champion a model trained for a few steps on a few hundred rows measures
the same throughput; the output always says which model it was.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finsent.settings import Settings

Echo = Callable[[str], None]


@dataclass(frozen=True)
class ModelChoice:
    model_dir: Path
    ref: str
    path: Path
    origin: str  # what the output says about where the model came from


def choose_model(settings: Settings, model: str | None, train_steps: int, scratch: Path, echo: Echo) -> ModelChoice:
    from model.registry import Registry

    registry = Registry(settings.models_path)
    if model:
        path = registry.path(model)
        return ModelChoice(settings.models_path, str(path), path, f"given: {model}")
    champion = registry.champion()
    if champion:
        # Pinned to the version: a promotion during the run must not change the model measured.
        return ModelChoice(settings.models_path, champion, registry.path(champion),
                           f"champion {champion} of {settings.models_path}")
    echo(f"no champion in {settings.models_path}: training a tiny model ({train_steps} steps)")
    return _train_tiny(settings, train_steps, scratch / "models")


def _train_tiny(settings: Settings, steps: int, root: Path) -> ModelChoice:
    from finsent.training_data import download_dir, find_training_data
    from model.registry import Registry
    from model.training import train

    files = find_training_data(settings.train_data_paths, download_dir(settings.state_dir))
    rows: list[tuple[str, str]] = []
    for path in files:  # a few hundred rows are plenty for a model that is only timed
        if path.suffix != ".csv":
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.DictReader(fh)):
                if n >= 256:
                    break
                rows.append((row["text"], row["label"]))
    registry = Registry(root)
    result = train(rows or files, base_model=settings.base_model, registry=registry, epochs=1, max_steps=steps,
                   batch_size=16, val_fraction=0.2, progress=False)
    registry.promote(result.version)
    return ModelChoice(root, result.version, registry.path(result.version),
                       f"tiny model {result.version} trained for {steps} steps (no champion in {settings.models_path}; "
                       "same architecture, so the same speed)")
