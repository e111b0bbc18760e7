"""Index retention: scored documents and window aggregates older than their settings are deleted.

Without it the docs and aggregates indices grow for as long as finsent runs, until Elasticsearch's
flood-stage disk watermark blocks every write and the pipeline halts. That block refuses deletes of
documents too (429, checked on this server), so retention must run before the disk fills; it cannot
free a blocked index. The distribution run here has neither delete-by-query (the reindex module) nor
ILM, so the old ids are found with searches and deleted with bulk requests, both in the server's core.

What goes (the retrain scheduler runs this hourly; ``finsent retention`` runs it once):

- docs: ``scored_at`` before now − ``FINSENT_DOCS_RETENTION_DAYS``. Not ``ingested_at``: a document
  replayed from the DLQ, or a stalled backlog, keeps its old ``ingested_at`` but is scored and indexed
  now, and deleting it at once would make ``finsent dlq replay`` send (and count) it again.
- aggregates: ``window_start`` before now − ``FINSENT_AGGREGATES_RETENTION_DAYS``, except that each
  window size found in the index keeps its latest ``HISTORY_WINDOWS + 1`` windows, which the alert
  engine reads back when it starts (:mod:`alerts.window_history`): 1d windows stay 49 days. The sizes
  come from the index, not from this process's ``FINSENT_WINDOWS``, which the scheduler may not share
  with the worker and the alert engine.

Each page of ids is found with a plain search and deleted with one bulk request that refreshes, so
the next search no longer sees it. No scroll stays open: a scroll would keep the deleted documents'
segments on disk until the run ends.

Labels (training data), alerts, drift checks, retrain audits and model metadata are kept: they are
small next to these two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from alerts.ticker_state import HISTORY_WINDOWS
from finsent.settings import Settings
from finsent.window_sizes import parse_window

log = logging.getLogger(__name__)

PAGE = 2000  # ids per search and per bulk request


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
    errors: list[str] = field(default_factory=list)  # the first few failed deletes' reasons
    error: str | None = None  # what ended the run early (Elasticsearch away, say)

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None


def docs_query(cutoff: datetime) -> dict[str, Any]:
    return {"range": {"scored_at": {"lt": cutoff.isoformat()}}}


def aggregates_query(windows: dict[str, int], cutoff: datetime, now: datetime,
                     keep_windows: int = HISTORY_WINDOWS + 1) -> dict[str, Any]:
    """Aggregates that started before ``cutoff``, except each size's latest ``keep_windows`` windows
    (``windows``: name → seconds)."""
    kept_from = {name: now - keep_windows * timedelta(seconds=size) for name, size in windows.items()}
    longer = {name: start for name, start in kept_from.items() if start < cutoff}
    plain: dict[str, Any] = {"filter": [{"range": {"window_start": {"lt": cutoff.isoformat()}}}]}
    if longer:
        plain["must_not"] = [{"terms": {"window": sorted(longer)}}]
    clauses = [{"bool": plain}] + [
        {"bool": {"filter": [{"term": {"window": name}}, {"range": {"window_start": {"lt": start.isoformat()}}}]}}
        for name, start in longer.items()
    ]
    return {"bool": {"should": clauses, "minimum_should_match": 1}}


def is_on(settings: Settings) -> bool:
    return bool(settings.docs_retention_days or settings.aggregates_retention_days)


def deletions(settings: Settings, now: datetime, windows: dict[str, int]) -> list[Deletion]:
    """Per index whose retention is on (not 0), what to delete at ``now``; ``windows``: the window
    sizes the aggregates index holds (:func:`windows_in`)."""
    out = []
    if settings.docs_retention_days:
        cutoff = now - timedelta(days=settings.docs_retention_days)
        out.append(Deletion(settings.index("docs"), f"documents scored before {cutoff:%Y-%m-%d %H:%M} UTC",
                            docs_query(cutoff)))
    if settings.aggregates_retention_days:
        cutoff = now - timedelta(days=settings.aggregates_retention_days)
        out.append(Deletion(settings.index("aggregates"),
                            f"windows started before {cutoff:%Y-%m-%d %H:%M} UTC (each size keeps its latest "
                            f"{HISTORY_WINDOWS + 1})", aggregates_query(windows, cutoff, now)))
    return out


def windows_in(es: Any, index: str) -> dict[str, int]:
    """The window sizes ``index`` holds aggregates of, name → seconds (a missing index holds none)."""
    found = es.search(index=index, size=0, ignore_unavailable=True,
                      aggs={"windows": {"terms": {"field": "window", "size": 1000}}})
    buckets = found.get("aggregations", {}).get("windows", {}).get("buckets", [])
    return {bucket["key"]: parse_window(bucket["key"]) for bucket in buckets}


def apply(es: Any, deletion: Deletion, *, dry_run: bool = False, page: int = PAGE,
          should_stop: Callable[[], bool] = lambda: False) -> Outcome:
    """Delete what ``deletion`` selects, ``page`` ids at a time, until nothing matches. Never raises:
    an error (Elasticsearch away, say) ends the run with what was deleted so far and the error. A
    document already gone is not a failure; any other failed delete is counted and logged."""
    from elasticsearch import helpers

    outcome = Outcome(deletion)
    try:
        outcome.matched = es.count(index=deletion.index, query=deletion.query, ignore_unavailable=True)["count"]
        while not dry_run and outcome.matched:
            if should_stop():
                outcome.stopped = True
                break
            hits = es.search(index=deletion.index, query=deletion.query, size=page, source=False,
                             track_total_hits=False, ignore_unavailable=True)["hits"]["hits"]
            actions = [{"_op_type": "delete", "_index": hit["_index"], "_id": hit["_id"]} for hit in hits]
            deleted_before = outcome.deleted
            for ok, item in helpers.streaming_bulk(es, actions, chunk_size=page, raise_on_error=False,
                                                   refresh=True):
                result = item["delete"]
                if ok:
                    outcome.deleted += 1
                elif result.get("status") != 404:
                    outcome.failed += 1
                    if len(outcome.errors) < 3:
                        outcome.errors.append(f"{result.get('_id')}: {result.get('status')} {result.get('error')}")
            if len(hits) < page or outcome.deleted == deleted_before:
                break  # the last page, or a page that would only fail again
    except Exception as exc:  # noqa: BLE001 - the caller counts the deletes so far and reports the failure
        outcome.error = f"{type(exc).__name__}: {exc}"
    if outcome.failed or outcome.error:
        log.warning("retention of %s: %d deleted, %d deletes failed%s%s", deletion.index, outcome.deleted,
                    outcome.failed, f" (first: {'; '.join(outcome.errors)})" if outcome.errors else "",
                    f"; stopped by {outcome.error}" if outcome.error else "")
    return outcome


def run(es: Any, settings: Settings, now: datetime, *, dry_run: bool = False,
        should_stop: Callable[[], bool] = lambda: False) -> list[Outcome]:
    """:func:`apply` for each index whose retention is on; logs a line per index that lost documents.
    Raises only if the aggregates index's window sizes cannot be read."""
    windows = windows_in(es, settings.index("aggregates")) if settings.aggregates_retention_days else {}
    outcomes = []
    for deletion in deletions(settings, now, windows):
        if should_stop():
            break
        outcome = apply(es, deletion, dry_run=dry_run, should_stop=should_stop)
        outcomes.append(outcome)
        if outcome.deleted:
            log.info("retention: %d of %d %s deleted from %s%s", outcome.deleted, outcome.matched, deletion.what,
                     deletion.index, " (stopped early)" if outcome.stopped else "")
    return outcomes
