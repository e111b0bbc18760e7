"""Index retention: scored documents and window aggregates older than their settings are deleted.

Without it the docs and aggregates indices grow for as long as finsent runs, until Elasticsearch's
flood-stage disk watermark blocks every write and the pipeline halts. That block refuses deletes of
documents too (429, checked on this server), so retention must run before the disk fills; it cannot
free a blocked index. The distribution run here has neither delete-by-query (the reindex module) nor
ILM, so the old ids are read with a scroll and deleted with bulk requests, both in the server's core.

What goes (the retrain scheduler runs this hourly; ``finsent retention`` runs it once):

- docs: ``ingested_at`` before now − ``FINSENT_DOCS_RETENTION_DAYS``. ``ingested_at`` is always set;
  ``published_at`` may be missing, or years back for a backfill that arrived today.
- aggregates: ``window_start`` before now − ``FINSENT_AGGREGATES_RETENTION_DAYS``, except that each
  window size of ``FINSENT_WINDOWS`` keeps its latest ``HISTORY_WINDOWS + 1`` windows, which the alert
  engine reads back when it starts (:mod:`alerts.window_history`): 1d windows stay 49 days.

Labels (training data), alerts, drift checks, retrain audits and model metadata are kept: they are
small next to these two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alerts.engine import HISTORY_WINDOWS
from finsent.settings import Settings
from stream.windows import parse_windows

log = logging.getLogger(__name__)

CHUNK = 2000  # ids per scroll page and per bulk request


@dataclass(frozen=True)
class Deletion:
    """What one index loses: ``query`` selects it, ``what`` says it in words."""

    index: str
    what: str
    query: dict[str, Any]


@dataclass
class Outcome:
    deletion: Deletion
    matched: int = 0  # what the query selected (with dry_run, what would be deleted)
    deleted: int = 0
    failed: int = 0
    stopped: bool = False  # asked to stop before the last page
    errors: list[str] | None = None  # the first few failures' reasons


def docs_query(cutoff: datetime) -> dict[str, Any]:
    return {"range": {"ingested_at": {"lt": cutoff.isoformat()}}}


def aggregates_query(windows: dict[str, int], cutoff: datetime, now: datetime,
                     keep_windows: int = HISTORY_WINDOWS + 1) -> dict[str, Any]:
    """Aggregates that started before ``cutoff``, except each size's latest ``keep_windows`` windows.
    Sizes no longer in ``windows`` (a changed FINSENT_WINDOWS) go by the cutoff alone."""
    longer = {name: now - keep_windows * timedelta(seconds=size) for name, size in windows.items()
              if now - keep_windows * timedelta(seconds=size) < cutoff}
    plain: dict[str, Any] = {"filter": [{"range": {"window_start": {"lt": cutoff.isoformat()}}}]}
    if longer:
        plain["must_not"] = [{"terms": {"window": sorted(longer)}}]
    clauses = [{"bool": plain}] + [
        {"bool": {"filter": [{"term": {"window": name}}, {"range": {"window_start": {"lt": start.isoformat()}}}]}}
        for name, start in longer.items()
    ]
    return {"bool": {"should": clauses, "minimum_should_match": 1}}


def deletions(settings: Settings, now: datetime) -> list[Deletion]:
    """Per index whose retention is on (not 0), what to delete at ``now``."""
    out = []
    if settings.docs_retention_days:
        cutoff = now - timedelta(days=settings.docs_retention_days)
        out.append(Deletion(settings.index("docs"), f"documents ingested before {cutoff:%Y-%m-%d %H:%M} UTC",
                            docs_query(cutoff)))
    if settings.aggregates_retention_days:
        cutoff = now - timedelta(days=settings.aggregates_retention_days)
        out.append(Deletion(settings.index("aggregates"),
                            f"windows started before {cutoff:%Y-%m-%d %H:%M} UTC (each size keeps its latest "
                            f"{HISTORY_WINDOWS + 1})", aggregates_query(parse_windows(settings.windows), cutoff, now)))
    return out


def apply(es: Any, deletion: Deletion, *, dry_run: bool = False,
          should_stop: Callable[[], bool] = lambda: False) -> Outcome:
    """Delete what ``deletion`` selects, a page at a time; a missing index deletes nothing. A document
    already gone (deleted meanwhile) is not a failure; any other failed delete is counted and logged."""
    from elasticsearch import helpers

    outcome = Outcome(deletion)
    outcome.matched = es.count(index=deletion.index, query=deletion.query, ignore_unavailable=True)["count"]
    if dry_run or not outcome.matched:
        return outcome
    errors: list[str] = []
    hits = helpers.scan(es, index=deletion.index, query={"query": deletion.query, "_source": False},
                        size=CHUNK, ignore_unavailable=True)

    def actions():
        for hit in hits:
            if should_stop():
                outcome.stopped = True
                return
            yield {"_op_type": "delete", "_index": hit["_index"], "_id": hit["_id"]}

    for ok, item in helpers.streaming_bulk(es, actions(), chunk_size=CHUNK, raise_on_error=False):
        result = item["delete"]
        if ok:
            outcome.deleted += 1
        elif result.get("status") != 404:
            outcome.failed += 1
            if len(errors) < 3:
                errors.append(f"{result.get('_id')}: {result.get('status')} {result.get('error')}")
    if errors:
        outcome.errors = errors
        log.warning("%s: %d deletes failed, first: %s", deletion.index, outcome.failed, "; ".join(errors))
    return outcome


def run(es: Any, settings: Settings, now: datetime, *, dry_run: bool = False,
        should_stop: Callable[[], bool] = lambda: False) -> list[Outcome]:
    """:func:`apply` for each index whose retention is on; logs a line per index."""
    outcomes = []
    for deletion in deletions(settings, now):
        if should_stop():
            break
        outcome = apply(es, deletion, dry_run=dry_run, should_stop=should_stop)
        outcomes.append(outcome)
        if not dry_run and outcome.matched:
            log.info("retention: %d of %d %s deleted from %s%s", outcome.deleted, outcome.matched, deletion.what,
                     deletion.index, " (stopped early)" if outcome.stopped else "")
    return outcomes
