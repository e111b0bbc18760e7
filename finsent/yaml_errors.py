"""YAML parse errors told without the file's text.

PyYAML's message quotes the lines around the mistake, and a line of a configuration file may hold a
token (a webhook URL, a header). :func:`yaml_problem` keeps what went wrong and where, line and column.
"""

from __future__ import annotations

import yaml


def _at(mark: yaml.Mark | None) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What ``exc`` says is wrong and where, never the text it quotes."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [f"{text}{_at(mark)}" for text, mark in ((exc.context, exc.context_mark),
                                                         (exc.problem, exc.problem_mark)) if text]
        return ": ".join(parts) or f"invalid YAML{_at(exc.problem_mark)}"
    if isinstance(exc, yaml.reader.ReaderError):  # a control character or bad encoding: says which, not the text
        return f"unacceptable character: {exc.reason} (position {exc.position})"
    return f"invalid YAML ({type(exc).__name__})"
