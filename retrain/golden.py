"""The fixed golden set and the replay sample, both drawn from the original training data.

The golden set is built ONCE — a seeded sample stratified by source and label of the
validation rows the first model held out of the files in ``FINSENT_RETRAIN_DATA``, else of
the files it was trained on (:func:`golden_candidates`: the rows its folder records, else the
trainer's default split; never any held-out evaluation split) — and written to ``FINSENT_GOLDEN_SET`` (default
``<state_dir>/retrain/golden.csv``, outside the repository). Every later retrain reads that
file unchanged, so champion and challenger are always compared on the same rows. Its rows
are kept out of the replay sample, so a challenger is never trained on what judges it.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finsent.settings import Settings

log = logging.getLogger(__name__)
BAD_ROWS_SHOWN = 20  # warnings about a golden file's bad rows, one each; the rest are counted


@dataclass(frozen=True)
class Row:
    text: str
    label: str
    source: str = "golden"


def data_paths(settings: Settings) -> list[Path]:
    """The original training files: ``FINSENT_RETRAIN_DATA`` (files or folders, comma-separated), else where the
    first model found its data (``finsent.training_data``, never downloading); a folder gives its train* files."""
    from finsent.training_data import download_dir, find_training_data

    copies = download_dir(settings.state_dir)
    if settings.retrain_data:
        configured = [Path(item.strip()).expanduser() for item in settings.retrain_data.split(",") if item.strip()]
        return find_training_data(configured, copies, setting="FINSENT_RETRAIN_DATA", download=False)
    return find_training_data(settings.train_data_paths, copies, download=False)


def load_rows(paths: Sequence[Path]) -> list[Row]:
    from model import data as datamod

    return [Row(e.text, e.label, e.source) for e in datamod.load(list(paths)).examples]


def stratified_sample(rows: Sequence[Row], size: int, seed: int) -> list[Row]:
    """``size`` rows keeping each (source, label) share; deterministic for a seed."""
    if size >= len(rows):
        return list(rows)
    strata: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        strata[(row.source, row.label)].append(row)
    # Largest-remainder allocation: exactly ``size`` rows, each stratum within one of its share.
    keys = sorted(strata)
    quotas = {k: size * len(strata[k]) / len(rows) for k in keys}
    take = {k: int(quotas[k]) for k in keys}
    for k in sorted(keys, key=lambda k: quotas[k] - take[k], reverse=True)[: size - sum(take.values())]:
        take[k] += 1
    rng = random.Random(seed)
    picked = [row for k in keys for row in rng.sample(strata[k], take[k])]
    rng.shuffle(picked)
    return picked


def golden_path(settings: Settings) -> Path:
    return settings.golden_set or settings.state_dir / "retrain" / "golden.csv"


class GoldenSetError(ValueError):
    """A golden set file with no row to judge a model on."""


def read_golden(path: Path) -> list[Row]:
    """The golden rows, read as training data is (``model.data``: a byte order mark, any header case, label
    synonyms such as "Negative" or "bullish"); a bad row is skipped with a warning, since the file may be
    written by hand."""
    from model import data as datamod

    report = datamod.load_file(path, source="golden", source_column="source")
    for bad in report.bad[:BAD_ROWS_SHOWN]:
        log.warning("golden set: skipped %s", bad)
    if len(report.bad) > BAD_ROWS_SHOWN:
        log.warning("golden set: skipped %d more bad rows of %s", len(report.bad) - BAD_ROWS_SHOWN, path)
    if not report.examples:
        first = f", the first {report.bad[0]}" if report.bad else ""
        raise GoldenSetError(f"golden set {path} has no usable row (a text and a label of negative, neutral or "
                             f"positive): {len(report.bad)} bad row(s){first}")
    return [Row(e.text, e.label, e.source) for e in report.examples]


def ensure_golden(settings: Settings, rows: Sequence[Row] | None = None, *, registry: Any = None,
                  seed: int = 20240601) -> list[Row]:
    """Read the golden set; build it first if the file does not exist yet (never rebuilt after), from the rows
    the first model of ``registry``'s champion held out (:func:`first_model_held_out`)."""
    path = golden_path(settings)
    if path.is_file():
        return read_golden(path)
    rows = rows if rows is not None else load_rows(data_paths(settings))
    held_out = first_model_held_out(registry) if registry is not None else None
    golden = stratified_sample(golden_candidates(rows, held_out), settings.golden_size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "source"])
        writer.writerows((r.text, r.label, r.source) for r in golden)
    os.replace(tmp, path)
    return golden


def first_model_held_out(registry: Any) -> set[str] | None:
    """The text fingerprints (:func:`model.data.text_fingerprint`) the first model recorded as held out for
    validation: the champion's, or, when the champion was retrained, its parent's, back to the model trained from
    files. None (logged) when there is no champion, that model was pruned, or it was trained before they were
    recorded."""
    from model.data import read_held_out
    from model.registry import RegistryError

    version, seen = registry.champion(), set()
    while version and version not in seen:  # a parent chain that loops (metadata edited by hand) ends
        seen.add(version)
        try:
            meta = registry.get(version)
        except RegistryError:
            log.warning("golden set: model %s is no longer in the registry: its held-out rows are unknown", version)
            return None
        if not meta.get("training", {}).get("retrain_trigger"):  # trained from files, not retrained
            held = read_held_out(registry.path(version))
            if held is None:
                log.warning("golden set: the first model %s did not record its validation rows (trained before "
                            "they were recorded)", version)
            return held
        version = meta.get("parent_version")
    log.warning("golden set: no champion model in %s to find the first model's held-out rows by", registry.root)
    return None


def golden_candidates(rows: Sequence[Row], held_out: set[str] | None = None) -> list[Row]:
    """The rows the first model held out for validation: it never trained on them, so the golden set judges what a
    challenger learnt, not what the champion remembers. ``held_out``: the fingerprints it recorded (exact, whatever
    its --seed and --val-fraction); without them, or when none is among ``rows`` (other files), the trainer's
    default split of the same files, which a model trained with other split settings partly trained on. Data too
    small to split gives all its rows."""
    from model.data import SPLIT_FRACTION, SPLIT_SEED, stratified_split, text_fingerprint

    if held_out is not None:
        held = [row for row in rows if text_fingerprint(row.text) in held_out]
        if held:
            log.info("golden set: drawn from the %d rows the first model held out for validation", len(held))
            return held
        log.warning("golden set: none of the %d rows the first model held out is in the training data read now%s",
                    len(held_out), "" if held_out else " (it held out none: --val-fraction 0)")
    log.warning("golden set: drawn from the trainer's default split (--val-fraction %s --seed %s); a first model "
                "trained with other split settings may have trained on some of its rows", SPLIT_FRACTION, SPLIT_SEED)
    held = stratified_split(list(rows), SPLIT_FRACTION, SPLIT_SEED)[1]
    return held or list(rows)


def replay_sample(rows: Sequence[Row], size: int, *, exclude: Sequence[Row] = (), seed: int = 0) -> list[Row]:
    """A stratified sample of the original data, without the golden rows."""
    banned = {r.text for r in exclude}
    return stratified_sample([r for r in rows if r.text not in banned], size, seed)
