"""Labels in Elasticsearch (``<prefix>-labels``): idempotent writes and the reads retraining needs.

A label's id is document + annotator (:func:`retrain.conflicts.label_id`) and its version is
``labeled_at`` in microseconds with ``external_gte`` versioning, so a relabel replaces the
earlier one, a replay of the topic changes nothing, and an older label that arrives late
never overwrites a newer one (Elasticsearch answers 409; that is counted as stale, not lost).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from elasticsearch import helpers

from finsent.schemas import LabelRecord, RecordError, parse_record
from finsent.settings import Settings
from model.input_text import PLACEHOLDER
from retrain.conflicts import label_id

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    indexed: int = 0
    stale: int = 0
    failed: list[tuple[LabelRecord, str]] = field(default_factory=list)


def _version(record: LabelRecord) -> int:
    return int(record.labeled_at.timestamp() * 1_000_000)


def index_labels(es: Any, settings: Settings, records: Sequence[LabelRecord], *, refresh: bool = False) -> IndexReport:
    """Bulk-index labels; raises only when Elasticsearch cannot be reached (callers retry)."""
    report = IndexReport()
    if not records:
        return report
    index = settings.index("labels")
    by_id = {}
    actions = []
    for record in records:
        doc_id = label_id(record)
        by_id[doc_id] = record
        actions.append({"_op_type": "index", "_index": index, "_id": doc_id, "version": _version(record),
                        "version_type": "external_gte", "_source": record.model_dump(mode="json")})
    ok, errors = helpers.bulk(es, actions, raise_on_error=False, raise_on_exception=True,
                              refresh="wait_for" if refresh else False)
    report.indexed = ok
    for error in errors:
        info = error.get("index", {})
        if info.get("status") == 409:
            report.stale += 1
        else:
            report.failed.append((by_id[info.get("_id")], str(info.get("error"))[:2000]))
    return report


def fetch_labels(es: Any, settings: Settings, *, since: datetime | None = None) -> list[LabelRecord]:
    """Every stored label (newer than ``since`` when given), oldest first; skips malformed ones."""
    query: dict[str, Any] = {"match_all": {}}
    if since is not None:
        query = {"range": {"labeled_at": {"gt": since.isoformat()}}}
    out = _scan(es, settings, query)
    out.sort(key=lambda r: r.labeled_at)
    return out


def fetch_labels_of(es: Any, settings: Settings, *, doc_ids: Iterable[str], texts: Iterable[str],
                    until: datetime) -> list[LabelRecord]:
    """Labels up to ``until`` with one of ``doc_ids``, or whose text may normalise to one of ``texts``.

    A superset for the texts (the index's text field is analysed, not a keyword); the caller
    (:func:`retrain.conflicts.with_related`) keeps the exact matches. One query per chunk of ids
    or texts, each well under Elasticsearch's 1024-clause limit.
    """
    out: list[LabelRecord] = []
    for should in related_clauses(sorted(doc_ids), sorted(texts)):
        out.extend(_scan(es, settings, {"bool": {"filter": [{"range": {"labeled_at": {"lte": until.isoformat()}}}],
                                                 "should": should, "minimum_should_match": 1}}))
    return out


def related_clauses(doc_ids: Sequence[str], texts: Sequence[str], *, ids_per_query: int = 1000,
                    texts_per_query: int = 20, words: int = 16) -> list[list[dict[str, Any]]]:
    """The ``should`` clauses of each query of :func:`fetch_labels_of`.

    A text is asked for by its first ``words`` words, all required: every label whose text
    normalises to it has them (a shorter query only widens the superset). The link placeholder
    is left out, since the stored text has the link itself.
    """
    queries = [[{"terms": {"doc_id": list(doc_ids[i:i + ids_per_query])}}]
               for i in range(0, len(doc_ids), ids_per_query)]
    matches = []
    for text in texts:
        kept = [w for w in text.split() if w != PLACEHOLDER][:words]
        if kept:  # a text of links only cannot be asked for; its older copies are left out
            matches.append({"match": {"text": {"query": " ".join(kept), "operator": "and"}}})
    queries += [matches[i:i + texts_per_query] for i in range(0, len(matches), texts_per_query)]
    return queries


def _scan(es: Any, settings: Settings, query: dict[str, Any]) -> list[LabelRecord]:
    out = []
    for hit in helpers.scan(es, index=settings.index("labels"), query={"query": query}, size=1000):
        try:
            out.append(parse_record(LabelRecord, hit["_source"]))
        except RecordError as exc:
            log.warning("skipping malformed label %s: %s", hit.get("_id"), exc.reason)
    return out


def labeled_doc_ids(es: Any, settings: Settings, doc_ids: Iterable[str]) -> set[str]:
    ids = sorted(set(doc_ids))
    if not ids:
        return set()
    found: set[str] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        resp = es.search(index=settings.index("labels"), size=len(chunk) * 4, source=["doc_id"],
                         query={"terms": {"doc_id": chunk}})
        found |= {h["_source"]["doc_id"] for h in resp["hits"]["hits"] if h["_source"].get("doc_id")}
    return found
