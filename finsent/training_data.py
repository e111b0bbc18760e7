"""Where the first model's labelled data comes from (DESIGN.md, "Model").

In order: ``FINSENT_TRAIN_DATA`` (files or folders), ``../shared/data`` beside the project
(development and CI), the public copies of the same datasets through the ``datasets``
library when it is installed and a hub is reachable, else a clear error saying how to
provide labelled CSV files.
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


class TrainingDataError(RuntimeError):
    pass


def _expand(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES and p.name.startswith("train")))
        elif path.is_file():
            files.append(path)
        else:
            raise TrainingDataError(f"FINSENT_TRAIN_DATA: {path} does not exist")
    return files


def find_training_data(configured: list[Path], download_dir: Path) -> list[Path]:
    """Labelled files for the bootstrap model; see the module docstring for the order."""
    if configured:
        files = _expand(configured)
        if not files:
            raise TrainingDataError(f"FINSENT_TRAIN_DATA names no train*.csv/.jsonl files: {configured}")
        return files
    if SHARED_DATA.is_dir():
        files = _expand([SHARED_DATA])
        if files:
            return files
    return _download_public(download_dir)


def _download_public(download_dir: Path) -> list[Path]:
    how = (
        "Provide labelled CSV files (columns text,label with labels negative|neutral|positive) and set "
        "FINSENT_TRAIN_DATA to the files or their folder."
    )
    try:
        import datasets  # noqa: PLC0415 - optional; only on machines that can reach a hub
    except ImportError:
        raise TrainingDataError(f"no training data found and the `datasets` library is not installed. {how}") from None
    download_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, config, split, column, names in _PUBLIC:
        target = download_dir / f"train-{name.replace('/', '_')}.csv"
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
