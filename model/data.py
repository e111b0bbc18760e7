"""Labelled data: CSV (``text,label`` columns) or JSONL (``{"text": ..., "label": ...}``).

Bad rows — missing or blank text, unknown label, bytes that are not UTF-8, a line that is not
JSON, a CSV quote never closed (which would take the rest of the file as one field) — are reported with file and line;
a CSV header without the needed columns is one error for the file. ``on_bad_rows="skip"`` drops them (and counts them);
``"reject"`` raises :class:`BadDataError` listing them. Also: the stratified validation split,
class weights and the training-data fingerprint.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finsent.schemas import LABELS, MAX_TEXT_CHARS
from model.labels import normalise_label

OnBadRows = Literal["skip", "reject"]
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
# csv refuses a field over 131,072 characters by default, though a text may be as long as the schemas allow. Not
# unbounded: a stray quote would read the rest of the file into one field, however large it is.
CSV_FIELD_LIMIT = MAX_TEXT_CHARS


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    source: str = "extra"


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class LoadReport:
    examples: list[Example] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


class BadDataError(ValueError):
    def __init__(self, bad: Sequence[BadRow], limit: int = 20) -> None:
        shown = "\n  ".join(str(b) for b in bad[:limit])
        more = f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else ""
        super().__init__(f"{len(bad)} bad row(s):\n  {shown}{more}")
        self.bad = list(bad)


def is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in JSONL_SUFFIXES


def csv_reader(lines: Iterable[str]) -> Any:
    """``csv.reader`` taking fields up to :data:`CSV_FIELD_LIMIT` long (csv's limit is global; never lowered here)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    return csv.reader(lines)


def field_names(names: Iterable[str]) -> list[str]:
    """Column names and JSONL keys as they are matched: stripped and lower-cased ("Text" is "text")."""
    return [name.strip().lower() for name in names]


def _bad_encoding(text: str) -> bool:
    # surrogateescape turns undecodable bytes into lone surrogates U+DC80..U+DCFF.
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def jsonl_lines(raw: str) -> list[str]:
    """The lines of a JSONL text: split at "\n" (and "\r\n") only. Not ``str.splitlines``: U+2028, U+2029
    and U+0085 may stand unescaped inside a JSON string, and splitting there breaks one row into two."""
    lines = raw.split("\n")
    if lines[-1] == "":  # the newline that ends the last line starts no line of its own
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def header_problem(columns: Sequence[str], required: Sequence[str]) -> str | None:
    """Why a CSV header with ``columns`` (as :func:`field_names` gives them) cannot be read for ``required``, or
    None. Said once for the file: otherwise each of its rows would be blamed for a missing text or label."""
    missing = [name for name in required if name not in columns]
    if not missing:
        return None
    said = ", ".join(columns) if any(columns) else "nothing"
    hint = next((f"; is it {name}-separated? Columns are split at commas" for mark, name in ((";", "semicolon"),
                 ("\t", "tab"), ("|", "pipe")) if len(columns) == 1 and mark in columns[0]), "")
    return f"the header has no {' or '.join(repr(m) for m in missing)} column (it has: {said}), so no row is read{hint}"


def missing_columns(path: Path | str, required: Sequence[str]) -> str | None:
    """:func:`header_problem` of a CSV file (None for JSONL, which has no header, and for an empty file)."""
    path = Path(path)
    if is_jsonl(path):
        return None
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as lines:
        header = next(csv_reader(lines), None)
    return header_problem(field_names(header), required) if header is not None else None


def quote_left_open(text: str) -> bool:
    """Whether CSV ``text`` ends inside a quoted field. The lenient reader then takes the rest of the file as one
    field, rows and all; strict, it says so (and nothing else here is read strictly)."""
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def iter_records(path: Path, *, keep_blank: bool = False,
                 required: Sequence[str] = ()) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line, record, error) for each data row of a CSV or JSONL file; line is 1-based.

    Blank lines are skipped, or reported as errors with ``keep_blank`` (so that output stays
    aligned with input line for line). A CSV whose header lacks a ``required`` column gives one
    error, for line 1, and no rows."""
    raw = path.read_bytes().decode("utf-8", errors="surrogateescape")
    if raw.startswith("\ufeff"):
        raw = raw[1:]
    if is_jsonl(path):
        for number, line in enumerate(jsonl_lines(raw), start=1):
            if not line.strip():
                if keep_blank:
                    yield number, None, "blank line"
                continue
            if _bad_encoding(line):
                yield number, None, "not valid UTF-8"
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                yield number, None, f"not valid JSON ({exc.msg})"
                continue
            if not isinstance(obj, dict):
                yield number, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield number, dict(zip(field_names(obj), obj.values())), None
        return
    stream = io.StringIO(raw, newline="")
    reader = csv_reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    columns = field_names(header)
    if problem := header_problem(columns, required):
        yield 1, None, problem
        return
    previous_end = reader.line_num
    while True:
        offset = stream.tell()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, None, f"malformed CSV ({exc})"
            previous_end = reader.line_num
            continue
        start, previous_end = previous_end + 1, reader.line_num
        if start < previous_end and stream.tell() == len(raw) and quote_left_open(raw[offset:]):
            yield start, None, (f"a quote opened on line {start} is never closed, so lines {start}-{previous_end} "
                                "(the rest of the file) read as one row")
            return
        if not row or not any(cell.strip() for cell in row):
            if keep_blank:
                yield start, None, "blank line"
            continue
        if any(_bad_encoding(cell) for cell in row):
            yield start, None, "not valid UTF-8"
            continue
        if len(row) != len(columns):
            yield start, None, f"expected {len(columns)} columns ({', '.join(columns)}), got {len(row)}"
            continue
        yield start, dict(zip(columns, row)), None


def load_file(path: Path | str, *, source: str | None = None, source_column: str | None = None) -> LoadReport:
    """The labelled rows of one file. Each row's source is ``source`` (default: named after the file), or
    with ``source_column`` that column's value where a row has one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}")
    src = source or (path.parent.name if path.stem in {"train", "test", "validation", "val"} else path.stem)
    report = LoadReport()
    for line, record, error in iter_records(path, required=("text", "label")):
        if error is None:
            assert record is not None
            try:
                report.examples.append(_example(record, _row_source(record, source_column) or src))
                continue
            except ValueError as exc:
                error = str(exc)
        report.bad.append(BadRow(str(path), line, error))
    return report


def _row_source(record: Mapping[str, Any], column: str | None) -> str | None:
    value = record.get(column) if column else None
    return value.strip() if isinstance(value, str) else None


def _example(record: Mapping[str, Any], source: str) -> Example:
    """The example of one record; ValueError says why there is none."""
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing text" if text is None else "blank text" if isinstance(text, str)
                         else "text is not a string")
    if record.get("label") in (None, ""):
        raise ValueError("missing label")
    return Example(text=text, label=normalise_label(record["label"]), source=source)


def load(paths: Sequence[Path | str], *, on_bad_rows: OnBadRows = "skip") -> LoadReport:
    """Every example of ``paths``; bad rows skipped (listed in the report) or rejected."""
    total = LoadReport()
    for path in paths:
        part = load_file(path)
        total.examples.extend(part.examples)
        total.bad.extend(part.bad)
    if total.bad and on_bad_rows == "reject":
        raise BadDataError(total.bad)
    return total


def fingerprint(examples: Sequence[Example]) -> str:
    """Order-independent hash of the (text, label) pairs: same data, same fingerprint."""
    digest = hashlib.sha256()
    for line in sorted(f"{e.label}\x1f{e.text}" for e in examples):
        digest.update(line.encode("utf-8", errors="surrogatepass"))
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


# In a trained model's folder: the texts it held out for validation and never trained on, one
# :func:`text_fingerprint` a line (retrain.golden draws the golden set from them). 17 bytes a row, not the texts.
HELD_OUT_FILE = "held_out_texts.txt"


def text_fingerprint(text: str) -> str:
    """A short hash of one text: 64 bits, so two texts of a data set sharing one is a one-in-10^11 chance."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


def held_out_fingerprints(train: Sequence[Example], val: Sequence[Example]) -> list[str]:
    """The fingerprints of the validation texts no training row has (a text in the data twice may fall on both
    sides of the split), sorted."""
    trained = {e.text for e in train}
    return sorted({text_fingerprint(e.text) for e in val if e.text not in trained})


def write_held_out(folder: Path, train: Sequence[Example], val: Sequence[Example]) -> int:
    """Write :data:`HELD_OUT_FILE` into a model folder; returns how many texts it lists."""
    prints = held_out_fingerprints(train, val)
    (folder / HELD_OUT_FILE).write_text("".join(f"{p}\n" for p in prints), encoding="ascii")
    return len(prints)


def read_held_out(folder: Path) -> set[str] | None:
    """The fingerprints a model folder's :data:`HELD_OUT_FILE` lists; None when it has none (a model trained
    before they were recorded, or by another tool)."""
    try:
        return set((folder / HELD_OUT_FILE).read_text(encoding="ascii").split())
    except FileNotFoundError:
        return None


# The trainer's split unless told otherwise (`finsent model train --val-fraction --seed`): the first model's, so
# its validation rows can be found again (retrain.golden draws the golden set from them).
SPLIT_FRACTION = 0.1
SPLIT_SEED = 13


def stratified_split(examples: Sequence[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Train/validation split stratified by source and label (each source keeps its own mix)."""
    if not 0 < val_fraction < 1:
        return list(examples), []
    from sklearn.model_selection import train_test_split

    keys = [f"{e.source}|{e.label}" for e in examples]
    counts = Counter(keys)
    # Strata too small to split go to training whole; stratification needs two per stratum.
    splittable = [i for i, k in enumerate(keys) if counts[k] >= 2]
    small = [examples[i] for i, k in enumerate(keys) if counts[k] < 2]
    if not splittable:  # every stratum a single row: nothing to hold out
        return list(examples), []
    n_val = max(1, round(len(splittable) * val_fraction)) if splittable else 0
    if n_val < len(set(keys[i] for i in splittable)) or len(splittable) - n_val < 1:
        train_idx, val_idx = train_test_split(splittable, test_size=val_fraction, random_state=seed)
    else:
        train_idx, val_idx = train_test_split(
            splittable, test_size=n_val, random_state=seed, stratify=[keys[i] for i in splittable]
        )
    return [examples[i] for i in sorted(train_idx)] + small, [examples[i] for i in sorted(val_idx)]


def split_and_repeat(examples: Sequence[Example], val_fraction: float, seed: int,
                     repeat: Mapping[str, int] | None = None) -> tuple[list[Example], list[Example]]:
    """:func:`stratified_split`, then each training row of a source in ``repeat`` that many times.

    Repeated after the split, never before: copies on both sides would put rows the model trained on
    into the validation that picks the best epoch, fits the temperature and becomes the drift baseline."""
    train, val = stratified_split(examples, val_fraction, seed)
    times = repeat or {}
    return [e for e in train for _ in range(times.get(e.source, 1))], val


def class_weights(labels: Sequence[str], power: float = 0.5) -> list[float]:
    """Per-class loss weights in LABELS order: (n / (k · count))^power, mean 1.

    power=1 is sklearn's "balanced"; the square root (default) evens out rare classes without
    trading away much accuracy on the common one.
    """
    counts = Counter(labels)
    n, k = len(labels), len(LABELS)
    raw = [(n / (k * counts[c])) ** power if counts[c] else 1.0 for c in LABELS]
    mean = sum(raw) / k
    return [w / mean for w in raw] if mean and not math.isnan(mean) else [1.0] * k


def read_texts(path: Path | str) -> Iterator[tuple[int, str | None, str | None]]:
    """(line, text, error) per input row for ``predict``: JSONL ``text`` field or CSV ``text`` column."""
    path = Path(path)
    for line, record, error in iter_records(path, keep_blank=True, required=("text",)):
        if error is None:
            assert record is not None
            text = record.get("text")
            if not isinstance(text, str):
                error = "missing text" if text is None else "text is not a string"
            elif not text.strip():
                error = "blank text"
            else:
                yield line, text, None
                continue
        yield line, None, f"{path}:{line}: {error}"
