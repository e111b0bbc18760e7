"""Labels into Kafka (``<prefix>.labels``): validation of incoming labels and a durable publisher.

Every way in (CLI, CSV, HTTP, the review page) validates here and publishes to the topic;
the indexer (:mod:`retrain.label_indexer`) is the only writer of ``<prefix>-labels``. A batch
with one bad label is refused whole, with each problem named, so nothing is half-imported.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from finsent.schemas import LabelRecord, describe_validation_error, utc_now
from finsent.settings import Settings
from retrain.conflicts import label_id


class LabelInputError(ValueError):
    """Labels that cannot be accepted; the message lists each problem and where it is."""

    def __init__(self, problems: Sequence[str]) -> None:
        shown = "; ".join(problems[:20]) + (f"; ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        super().__init__(shown)
        self.problems = list(problems)


def build_records(items: Iterable[Mapping[str, Any]], *, where: str, annotator: str, source: str,
                  now: datetime | None = None) -> list[LabelRecord]:
    """Validate label dicts; ``annotator``/``source``/``labeled_at`` fill what an item leaves out."""
    now = now or utc_now()
    records, problems = [], []
    for n, item in enumerate(items):
        if not isinstance(item, Mapping):
            problems.append(f"{where}[{n}]: expected an object, got {type(item).__name__}")
            continue
        data = {"annotator": annotator, "source": source, "labeled_at": now} | {
            k: v for k, v in item.items() if v not in (None, "")}
        if isinstance(data.get("label"), str):
            data["label"] = data["label"].strip().lower()
        try:
            records.append(LabelRecord.model_validate(data))
        except ValidationError as exc:
            problems.append(f"{where}[{n}]: {describe_validation_error(exc)}")
    if problems:
        raise LabelInputError(problems)
    return records


def read_csv(path: Path, *, annotator: str, source: str = "csv", now: datetime | None = None) -> list[LabelRecord]:
    """Labels from a CSV with a header: ``text,label`` and optionally ``doc_id``, ``annotator``."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"text", "label"} - set(reader.fieldnames or [])
            if missing:
                raise LabelInputError([f"{path}: header lacks column(s) {sorted(missing)} (has {reader.fieldnames})"])
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise LabelInputError([f"{path}: not UTF-8 ({exc})"]) from None
    except OSError as exc:
        raise LabelInputError([f"{path}: {exc.strerror or exc}"]) from None
    allowed = ("text", "label", "doc_id", "annotator")
    try:
        return build_records([{k: row.get(k) for k in allowed} for row in rows], where=str(path),
                             annotator=annotator, source=source, now=now)
    except LabelInputError as exc:
        # Report CSV line numbers (header is line 1) rather than list positions.
        problems = [_csv_line(p, str(path)) for p in exc.problems]
        raise LabelInputError(problems) from None


def _csv_line(problem: str, where: str) -> str:
    prefix = f"{where}["
    if problem.startswith(prefix):
        n, _, rest = problem[len(prefix):].partition("]")
        if n.isdigit():
            return f"{where}:{int(n) + 2}{rest}"
    return problem


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

    def publish(self, records: Sequence[LabelRecord]) -> list[str]:
        """Send and wait; returns the label ids. Raises the Kafka error if any send failed."""
        if self._producer is None:
            raise RuntimeError("LabelPublisher.start() was not called")
        futures = []
        ids = []
        for record in records:
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
