"""File replay: JSONL or CSV documents (the inbound shape) into Kafka, paced or at full speed.

``rate``: documents per second. ``speed``: ×N the original pace, from ``published_at`` gaps
(lines without a readable time go out right after the previous one). Neither: as fast as
Kafka acknowledges. A bad line (invalid UTF-8 or JSON, a missing ``text``, a zone-less
time) is skipped with its line number; the rest of the file goes on. A UTF-8 byte order mark
(Excel's "CSV UTF-8") is not part of the first line. Before Kafka is connected to, :func:`file_problem` says why a
file cannot be replayed and :func:`holds_no_records` whether it has nothing to replay.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from ingest.inbound import to_item
from ingest.items import FetchResult, Rejected, SourceItem
from ingest.normalise import parse_timestamp
from ingest.pipeline import BatchReport, Pipeline

BATCH = 500
LINGER = 0.1  # seconds: documents due this soon go in the current batch


def detect_format(path: Path) -> str:
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"


def read_items(path: Path, fmt: str | None = None, *, source: str = "replay") -> Iterator[SourceItem | Rejected]:
    """Every line of the file as an item, or as the reason it was skipped."""
    fmt = fmt or detect_format(path)
    if fmt == "csv":
        yield from _read_csv(path, source)
    else:
        yield from _read_jsonl(path, source)


def _read_jsonl(path: Path, source: str) -> Iterator[SourceItem | Rejected]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path.name}:{number}"
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw.strip():
                continue
            try:
                raw.decode("utf-8")
                obj = orjson.loads(raw)
            except UnicodeDecodeError as exc:
                yield Rejected("invalid_utf8", f"not UTF-8 at byte {exc.start}", where)
                continue
            except orjson.JSONDecodeError as exc:
                yield Rejected("invalid_json", f"not valid JSON ({exc})", where)
                continue
            try:
                yield to_item(obj, default_source=source, where=where, lenient=True)
            except Rejected as bad:
                yield bad


def file_problem(path: Path, fmt: str | None = None) -> str | None:
    """Why no line of ``path`` could be replayed (not a file, unreadable, a CSV without a ``text`` column), found
    from its first line at most; OSError is left to the caller, which names the path."""
    if stat.S_ISFIFO(path.stat().st_mode):
        return None  # a pipe (`<(zcat f.jsonl.gz)`) can be read once only: by the replay
    if not path.is_file():
        return "not a file"
    if (fmt or detect_format(path)) != "csv":
        with path.open("rb") as handle:
            handle.read(1)  # what opens may still not read (a folder's permissions, an I/O error)
        return None
    with _open_csv(path) as handle:
        return _no_text_column(_csv_reader(handle, path))


def holds_no_records(path: Path, fmt: str | None = None) -> bool:
    """Whether ``path`` has nothing to replay: no bytes, blank lines only, or a CSV header alone. Read up to its
    first record. A pipe is read by the replay only, and what is not a file or has a header without ``text`` is
    :func:`file_problem`'s."""
    if not stat.S_ISREG(path.stat().st_mode):
        return False
    if (fmt or detect_format(path)) == "csv":
        with _open_csv(path) as handle:
            reader = _csv_reader(handle, path)
            no_rows = next(reader, None) is None  # DictReader skips blank rows
            return no_rows and (not reader.fieldnames or _no_text_column(reader) is None)
    with path.open("rb") as handle:
        return not any((raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw).strip()
                       for number, raw in enumerate(handle, start=1))


def _open_csv(path: Path):
    return path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")


def _csv_reader(handle, path: Path) -> csv.DictReader:
    return csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")


def _no_text_column(reader: csv.DictReader) -> str | None:
    return None if "text" in (reader.fieldnames or ()) else f"no 'text' column (columns: {reader.fieldnames})"


def _read_csv(path: Path, source: str) -> Iterator[SourceItem | Rejected]:
    with _open_csv(path) as handle:
        reader = _csv_reader(handle, path)
        if problem := _no_text_column(reader):
            yield Rejected("missing_field", problem, f"{path.name}:1")
            return
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            values = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
            if any(isinstance(v, str) and _has_surrogate(v) for v in values.values()):
                yield Rejected("invalid_utf8", "row is not valid UTF-8", where)
                continue
            if "tickers" in values:
                values["tickers"] = [t.strip() for t in values["tickers"].replace(";", ",").split(",") if t.strip()]
            try:
                yield to_item(values, default_source=source, where=where, lenient=True)
            except Rejected as bad:
                yield bad


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


class Pacer:
    """When each document is due, in seconds after the start."""

    def __init__(self, rate: float | None = None, speed: float | None = None) -> None:
        if rate is not None and speed is not None:
            raise ValueError("give --rate or --speed, not both")
        if (rate is not None and rate <= 0) or (speed is not None and speed <= 0):
            raise ValueError("--rate and --speed must be positive")
        self.rate, self.speed = rate, speed
        self.count = 0
        self._first: datetime | None = None
        self._last_due = 0.0

    def due(self, item: SourceItem) -> float:
        self.count += 1
        if self.rate is not None:
            return (self.count - 1) / self.rate
        if self.speed is None:
            return 0.0
        try:
            when = parse_timestamp(item.published_at) if item.published_at not in (None, "") else None
        except Rejected:
            when = None
        if when is None:
            return self._last_due
        if self._first is None:
            self._first = when
        # Never earlier than the previous document: an out-of-order line goes right away.
        self._last_due = max(self._last_due, (when - self._first).total_seconds() / self.speed)
        return self._last_due


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep, but wake at once on a stop signal (a --speed replay may wait for hours)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


@dataclass
class ReplayReport(BatchReport):
    stopped_at: str | None = None  # the first line a stop left unread (file:line); None once the file was read


async def replay(path: Path, pipeline: Pipeline, *, rate: float | None = None, speed: float | None = None,
                 fmt: str | None = None, source: str = "replay", label: str | None = None,
                 stop: asyncio.Event | None = None, clock: Callable[[], float] = time.monotonic) -> ReplayReport:
    """The file's lines, produced; a ``stop`` ends the replay before the next line, with the lines read so far
    submitted (and ``stopped_at`` naming the next)."""
    label = label or f"file:{path.name}"[:64]
    pacer = Pacer(rate, speed)
    total = ReplayReport()
    batch = FetchResult()
    started = clock()

    async def flush() -> None:
        nonlocal batch
        if batch.items or batch.rejected:
            total.add(await pipeline.submit(label, batch))
        batch = FetchResult()

    for entry in read_items(path, fmt, source=source):
        if stop is not None and stop.is_set():
            total.stopped_at = entry.where
            break
        if isinstance(entry, Rejected):
            batch.rejected.append(entry)
            continue
        due = started + pacer.due(entry)
        if due - clock() > LINGER:
            await flush()
            delay = due - clock()
            if delay > 0:
                await _sleep(delay, stop)
        batch.items.append(entry)
        if len(batch.items) >= BATCH:
            await flush()
    await flush()
    return total
