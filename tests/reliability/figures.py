"""Figures of the reliability suite, appended to ``.finsent/reliability/figures.jsonl``.

Each fault run and each corpus run writes one line (what was sent, indexed, lost, doubled,
how the cases ended); RELIABILITY.md quotes them. The folder is git-ignored state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / ".finsent" / "reliability" / "figures.jsonl"


def record(kind: str, **figures: Any) -> dict[str, Any]:
    line = {"kind": kind, "at": datetime.now(UTC).isoformat(timespec="seconds")} | figures
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("ab") as fh:
        fh.write(orjson.dumps(line, default=str) + b"\n")
    print(f"[reliability] {orjson.dumps(line, default=str).decode()}")
    return line
