"""Where the model's original labelled data comes from (DESIGN.md, "Model").

In order: ``FINSENT_TRAIN_DATA`` (files or folders), ``../shared/data`` beside the project
(development and CI), the public copies of the same datasets through the ``datasets``
library when it is installed and a hub is reachable, else a clear error saying how to
provide labelled CSV files. A folder contributes its ``train*.csv`` and ``train*.jsonl``
files only, so a test or validation split beside them never reaches training.

Retraining replays the same data (``FINSENT_RETRAIN_DATA`` first, when set) and never
downloads: it finds the copies the first model was trained on, or says what to set.
"""

from __future__ import annotations

import csv
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
DATA_SUFFIXES = (".csv", ".jsonl")

# Public copies of the two datasets of DESIGN.md: (dataset, config, split, text column, label names by id)
_PUBLIC = (
    ("takala/financial_phrasebank", "sentences_50agree", "train", "sentence", ("negative", "neutral", "positive")),
    ("zeroshot/twitter-financial-news-sentiment", None, "train", "text", ("negative", "positive", "neutral")),
)


class TrainingDataError(ValueError):
    pass


HOW = ("Provide labelled CSV files (columns text,label with labels negative|neutral|positive) and set "
       "FINSENT_TRAIN_DATA to the files or their folder.")


def _expand(paths: list[Path], setting: str) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES and p.name.startswith("train")))
        elif path.is_file():
            files.append(path)
        else:
            raise TrainingDataError(f"{setting}: {path} does not exist")
    return files


def find_training_data(configured: list[Path], download_dir: Path, *, setting: str = "FINSENT_TRAIN_DATA",
                       download: bool = True) -> list[Path]:
    """Labelled files for the first model (or, with ``download=False``, a retrain's replay); see the module
    docstring for the order. ``setting`` names the variable ``configured`` came from, for the errors."""
    if configured:
        files = _expand(configured, setting)
        if not files:
            raise TrainingDataError(f"{setting} names no train*.csv/.jsonl files: {', '.join(map(str, configured))}")
        return files
    if SHARED_DATA.is_dir():
        files = _expand([SHARED_DATA], setting)
        if files:
            return files
    if not download:
        downloaded = _public_copies(download_dir)
        if all(path.exists() for path in downloaded):
            return downloaded
        raise TrainingDataError(f"no training data found to replay (neither FINSENT_RETRAIN_DATA nor "
                                f"FINSENT_TRAIN_DATA is set, and {SHARED_DATA} is absent). {HOW}")
    return _download_public(download_dir)


def download_dir(state_dir: Path) -> Path:
    """Where the public copies are kept once downloaded: the state folder, outside the repository."""
    return state_dir.resolve() / "training-data"


def _public_copies(download_dir: Path) -> list[Path]:
    return [download_dir / f"train-{name.replace('/', '_')}.csv" for name, *_ in _PUBLIC]


def _download_public(download_dir: Path) -> list[Path]:
    how = HOW
    try:
        import datasets  # noqa: PLC0415 - optional; only on machines that can reach a hub
    except ImportError:
        raise TrainingDataError(f"no training data found and the `datasets` library is not installed. {how}") from None
    download_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for (name, config, split, column, names), target in zip(_PUBLIC, _public_copies(download_dir), strict=True):
        if not target.exists():
            try:
                rows = datasets.load_dataset(name, config, split=split)
            except Exception as exc:  # noqa: BLE001 - any hub failure ends in the same advice
                raise TrainingDataError(f"could not fetch {name} ({exc}). {how}") from None
            tmp = target.with_suffix(".tmp")
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["text", "label"])
                for row in rows:
                    writer.writerow([row[column], names[int(row["label"])]])
            tmp.replace(target)
        files.append(target)
    return files
