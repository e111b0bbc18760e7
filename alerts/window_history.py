"""A restarted alert engine's window baselines, read back from the aggregates index.

The engine keeps each (ticker, window) series in memory, and a rule with ``min_history`` waits for
that many closed windows of its own. Without this, each restart (a deploy, a crash) would silence
such rules for ``min_history`` windows: five hours for hourly windows with the example rules. The
stream worker indexes every window's final figures, so the engine reads the last
:data:`~alerts.ticker_state.HISTORY_WINDOWS` of each series back before it consumes again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from alerts.ticker_state import HISTORY_WINDOWS
from finsent.schemas import IGNORE_UNKNOWN, Aggregate
from finsent.window_sizes import parse_windows

log = logging.getLogger(__name__)


def history_query(windows: str, now: datetime) -> dict[str, Any]:
    """The aggregates a series keeps: per window size of FINSENT_WINDOWS, the windows that started in
    the last HISTORY_WINDOWS + 1 of its lengths (the last one is the window still filling)."""
    return {"bool": {"should": [
        {"bool": {"filter": [
            {"term": {"window": window}},
            {"range": {"window_start": {
                "gte": (now - (HISTORY_WINDOWS + 1) * timedelta(seconds=size)).isoformat(),
                "lte": now.isoformat(),
            }}},
        ]}}
        for window, size in parse_windows(windows).items()
    ], "minimum_should_match": 1}}


def read_history(es: Any, index: str, windows: str, now: datetime) -> Iterator[Aggregate]:
    """The aggregates of :func:`history_query`, oldest first; a document that is not a valid aggregate
    is skipped with a warning that names it."""
    from elasticsearch import helpers

    body = {"query": history_query(windows, now), "sort": [{"window_start": "asc"}]}
    hits = helpers.scan(es, index=index, query=body, preserve_order=True, size=2000, ignore_unavailable=True)
    for hit in hits:
        try:
            yield Aggregate.model_validate(hit["_source"], context=IGNORE_UNKNOWN)
        except ValidationError as exc:
            log.warning("aggregate %s in %s is not valid, left out of the window history: %s", hit.get("_id"), index,
                        exc.errors(include_url=False)[:3])
