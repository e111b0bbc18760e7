"""Labels into Kafka (``<prefix>.labels``): validation of incoming labels and a durable publisher.

Every way in (CLI, CSV, HTTP, the review page) validates here and publishes to the topic;
the indexer (:mod:`retrain.label_indexer`) is the only writer of ``<prefix>-labels``. A batch
with one bad label is refused whole, with each problem named, so nothing is half-imported.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from finsent.schemas import LabelRecord, describe_validation_error, utc_now
from finsent.settings import Settings
from model.data import csv_reader, field_names
from retrain.conflicts import label_id


class LabelInputError(ValueError):
    """Labels that cannot be accepted; the message lists each problem and where it is."""

    def __init__(self, problems: Sequence[str]) -> None:
        shown = "; ".join(problems[:20]) + (f"; ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(shown)
        self.problems = list(problems)


# Clock skew allowed on a client's labeled_at, as ingest allows on published_at. A label dated later
# would be the newest label for good and hold every later label back from retraining as not fresh.
FUTURE_TOLERANCE = timedelta(minutes=5)


def build_records(items: Iterable[Mapping[str, Any]], *, where: str, annotator: str, source: str,
                  now: datetime | None = None) -> list[LabelRecord]:
    """Validate label dicts; ``annotator``/``source``/``labeled_at`` fill what an item leaves out."""
    return _validated(((f"{where}[{n}]", item) for n, item in enumerate(items)), annotator=annotator, source=source,
                      now=now or utc_now())


def _validated(entries: Iterable[tuple[str, Any]], *, annotator: str, source: str, now: datetime,
               to_item: Callable[[Any], object] = lambda raw: raw) -> list[LabelRecord]:
    """A record of each (place, raw) entry, or a LabelInputError that names every problem by its place.
    ``to_item`` turns a raw entry into the label's fields (it raises ValueError for one that cannot)."""
    records, problems = [], []
    for place, raw in entries:
        try:
            records.append(_record(to_item(raw), annotator=annotator, source=source, now=now))
        except ValueError as exc:
            problems.append(f"{place}: {exc}")
    if problems:
        raise LabelInputError(problems)
    return records


def _record(item: object, *, annotator: str, source: str, now: datetime) -> LabelRecord:
    if not isinstance(item, Mapping):
        raise ValueError(f"expected an object, got {type(item).__name__}")
    data = {"annotator": annotator, "source": source, "labeled_at": now} | {
        k: v for k, v in item.items() if v not in (None, "")}
    if isinstance(data.get("label"), str):
        data["label"] = data["label"].strip().lower()
    try:
        record = LabelRecord.model_validate(data)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None
    if problem := future_problem(record, now):
        raise ValueError(problem)
    return record


def future_problem(record: LabelRecord, now: datetime) -> str | None:
    """Why a label may not be kept: dated ahead of ``now`` (beyond clock skew), it would become the
    newest label a retrain saw and hold back every later one as not fresh."""
    if record.labeled_at > now + FUTURE_TOLERANCE:
        return f"labeled_at {record.labeled_at.isoformat()} is in the future"
    return None


def read_csv(path: Path, *, annotator: str, source: str = "csv", now: datetime | None = None) -> list[LabelRecord]:
    """Labels from a CSV with a header: ``text,label`` and optionally ``doc_id``, ``annotator``.

    Problems name the file and the line a row starts on (the header is line 1).
    """
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark, which model.data accepts too.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header, rows = _csv_rows(fh, str(path))
    except UnicodeDecodeError as exc:
        raise LabelInputError([f"{path}: not UTF-8 ({exc})"]) from None
    except OSError as exc:
        raise LabelInputError([f"{path}: {exc.strerror or exc}"]) from None
    missing = {"text", "label"} - set(header)
    if missing:
        raise LabelInputError([f"{path}: header lacks column(s) {sorted(missing)} (has {header})"])

    def to_item(row: list[str]) -> dict[str, str | None]:
        if len(row) > len(header):  # an unquoted comma in the text would cut it short
            raise ValueError(f"{len(row)} fields, the header has {len(header)} ({', '.join(header)})")
        fields = dict(zip(header, row))
        return {k: fields.get(k) for k in ("text", "label", "doc_id", "annotator")}

    return _validated(((f"{path}:{line}", row) for line, row in rows), annotator=annotator, source=source,
                      now=now or utc_now(), to_item=to_item)


def _csv_rows(fh: TextIO, where: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (names stripped, lower-cased) and each non-blank row with the line it starts on."""
    reader = csv_reader(fh)
    header: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    end = 0
    try:
        for row in reader:
            # A quoted field may span lines: a row starts just after the previous one ended.
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if not header:
                header = field_names(row)
            else:
                rows.append((start, row))
    except csv.Error as exc:
        raise LabelInputError([f"{where}:{reader.line_num}: malformed CSV ({exc})"]) from None
    return header, rows


class LabelPublisher:
    """Publishes labels to ``<prefix>.labels`` with acks=all; ``publish`` returns once they are durable."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.topic = settings.topic("labels")
        self.timeout = timeout
        self._producer = None

    def start(self) -> LabelPublisher:
        from finsent import clients

        self._producer = clients.kafka_producer(self.settings)
        return self

    def publish(self, records: Sequence[LabelRecord], stopped: Callable[[], bool] = lambda: False) -> list[str]:
        """Send and wait; returns the label ids. Raises the Kafka error if any send failed. Once ``stopped()`` is
        true no more is sent: the ids returned are those of the labels before it, sent and acknowledged."""
        if self._producer is None:
            raise RuntimeError("LabelPublisher.start() was not called")
        futures = []
        ids = []
        for record in records:
            if stopped():
                break
            key = label_id(record)
            ids.append(key)
            futures.append(self._producer.send(self.topic, key=key.encode(), value=record.to_json()))
        self._producer.flush(timeout=self.timeout)
        for future in futures:
            future.get(timeout=self.timeout)
        return ids

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self.timeout)
            self._producer = None

    def __enter__(self) -> LabelPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
