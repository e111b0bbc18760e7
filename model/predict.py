"""Batch prediction over a file: one output line per input row, in order, errors in place."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from finsent.schemas import Sentiment
from model.data import read_texts


def predict_file(scorer: Any, input_path: Path, out: TextIO, *, chunk: int = 512) -> dict[str, int]:
    """Score ``input_path`` into ``out`` (JSONL); returns counts of scored rows and error lines."""
    counts = {"scored": 0, "errors": 0}
    pending: list[tuple[int, str | None, str | None]] = []

    def flush() -> None:
        results = iter(score_or_blame(scorer, [text for _, text, error in pending if error is None]))
        for line, _, error in pending:
            outcome = next(results) if error is None else error
            if isinstance(outcome, str):
                message = outcome if error is not None else f"{input_path}:{line}: {outcome}"
                row = {"line": line, "error": message, "model_version": scorer.version}
                counts["errors"] += 1
            else:
                row = {"line": line} | outcome.model_dump(mode="json") | {"model_version": scorer.version}
                counts["scored"] += 1
            out.write(orjson.dumps(row).decode() + "\n")
        pending.clear()

    for line, text, error in read_texts(input_path):
        if text is not None and (why := unencodable(text)) is not None:
            text, error = None, f"{input_path}:{line}: {why}"
        pending.append((line, text, error))
        if len(pending) >= chunk:
            flush()
    flush()
    return counts


def output_problem(input_path: Path, output: Path) -> str | None:
    """Why ``predict`` cannot write ``output``, or None; asked before the model loads. The input itself is refused:
    opening it for writing empties it before a row is read, so the input is lost and the output is empty."""
    if output.is_dir():
        return f"the output {output} is a folder; give a file name"
    if not output.parent.is_dir():
        return f"no folder {output.parent} for the output {output.name}"
    if output.exists() and output.samefile(input_path):
        return f"the output {output} is the input file: writing it would erase the input before it is read"
    return None


def unencodable(text: str) -> str | None:
    """Why no tokenizer takes ``text``, or None. JSON's ``\\ud83d`` escapes can leave half of a
    UTF-16 pair (an emoji cut in two), which parses but has no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"text holds a lone UTF-16 surrogate {text[exc.start]!r} at character {exc.start + 1} (half of a pair)"
    return None


def score_or_blame(scorer: Any, texts: Sequence[str]) -> list[Sentiment | str]:
    """Each text's sentiment, or why the model failed on it. Texts the model fails on together are
    scored again in halves, down to the ones it fails on alone, so a bad row costs its own line, not
    its chunk's (the idea of the worker's ``_score_or_blame``)."""
    if not texts:
        return []
    try:
        results = list(scorer.score(list(texts)))
        if len(results) != len(texts):
            raise RuntimeError(f"the scorer returned {len(results)} results for {len(texts)} texts")
        return results
    except Exception as exc:  # keep going: the row it fails on gets the error in its place
        if len(texts) == 1:
            return [f"scoring failed: {type(exc).__name__}: {exc}"]
    middle = len(texts) // 2
    return score_or_blame(scorer, texts[:middle]) + score_or_blame(scorer, texts[middle:])
