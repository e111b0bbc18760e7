"""Batch prediction over a file: one output line per input row, in order, errors in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import orjson

from model.data import read_texts


def predict_file(scorer: Any, input_path: Path, out: TextIO, *, chunk: int = 512) -> dict[str, int]:
    """Score ``input_path`` into ``out`` (JSONL); returns counts of scored rows and error lines."""
    counts = {"scored": 0, "errors": 0}
    pending: list[tuple[int, str | None, str | None]] = []

    def flush() -> None:
        texts = [text for _, text, error in pending if error is None]
        try:
            results = iter(scorer.score(texts))
            failure = None
        except Exception as exc:  # keep going: each row of this chunk gets the error in its place
            results, failure = iter(()), f"scoring failed: {type(exc).__name__}: {exc}"
        for line, text, error in pending:
            if error is None and failure is None:
                sentiment = next(results)
                row = {"line": line} | sentiment.model_dump(mode="json") | {"model_version": scorer.version}
                counts["scored"] += 1
            else:
                row = {"line": line, "error": error or failure, "model_version": scorer.version}
                counts["errors"] += 1
            out.write(orjson.dumps(row).decode() + "\n")
        pending.clear()

    for item in read_texts(input_path):
        pending.append(item)
        if len(pending) >= chunk:
            flush()
    flush()
    return counts
