"""Labels in Elasticsearch (``<prefix>-labels``): idempotent writes and the reads retraining needs.

A label's id is document + annotator (:func:`retrain.conflicts.label_id`) and its version is
``labeled_at`` in microseconds with ``external_gte`` versioning, so a relabel replaces the
earlier one, a replay of the topic changes nothing, and an older label that arrives
late never overwrites a newer one (Elasticsearch answers 409; that is counted as stale, not lost).

Each stored label also has ``indexed_at``, this store's clock when it indexed the label
(:class:`StoredLabel`). ``labeled_at`` is the client's to set: a label dated back (an import of
last month's labels) is older than the newest label a retrain saw, and by ``labeled_at`` alone it
would never count as fresh, so no model would ever learn it. Retraining also counts a label
indexed after it last read the labels as fresh (:func:`fetch_labels`' ``read_since``). A label
stored again as it was (a replay of the topic) keeps its first stamp.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from elasticsearch import helpers

from finsent.schemas import LabelRecord, RecordError, UtcDatetime, json_time, parse_record, utc_now
from finsent.settings import Settings
from model.input_text import PLACEHOLDER
from retrain.conflicts import label_id

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    indexed: int = 0
    stale: int = 0
    failed: list[tuple[LabelRecord, str]] = field(default_factory=list)


# A label stamped this long before a read is searchable by then: its bulk write, and the index's
# refresh (1 s), are done. A retrain records its read this much earlier than it began, so a label
# stored meanwhile counts as fresh once more rather than as seen.
SEARCHABLE_WITHIN = timedelta(seconds=30)


class StoredLabel(LabelRecord):
    """A label as the index keeps it. Not on the topic, whose records stay as clients send them."""

    indexed_at: UtcDatetime | None = None  # None: indexed before the field existed


def _version(record: LabelRecord) -> int:
    return int(record.labeled_at.timestamp() * 1_000_000)


def index_labels(es: Any, settings: Settings, records: Sequence[LabelRecord], *, refresh: bool = False,
                 now: datetime | None = None) -> IndexReport:
    """Bulk-index labels, ``indexed_at`` ``now`` (the clock's); raises only when Elasticsearch cannot
    be reached (callers retry)."""
    report = IndexReport()
    if not records:
        return report
    index = settings.index("labels")
    indexed_at = json_time(now or utc_now())
    labels = [(label_id(record), record) for record in records]  # a relabel in the same batch: the version decides
    by_id = dict(labels)
    stored = _stored_stamps(es, index, list(by_id))
    actions = []
    for doc_id, record in labels:
        version = _version(record)
        same, first = stored.get(doc_id, (None, None))
        source = record.model_dump(mode="json") | {"indexed_at": first if same == version else indexed_at}
        actions.append({"_op_type": "index", "_index": index, "_id": doc_id, "version": version,
                        "version_type": "external_gte", "_source": source})
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


def _stored_stamps(es: Any, index: str, ids: list[str]) -> dict[str, tuple[int, str]]:
    """(version, ``indexed_at``) of the labels already stored under these ids. A label stored again as
    it is (same version: a replay of the topic, or a batch read again after a failure) keeps its first
    stamp, so it does not become fresh again; a relabel is a new version, and gets a new stamp."""
    found = es.mget(index=index, ids=ids, source_includes=["indexed_at"])["docs"]
    return {doc["_id"]: (doc["_version"], doc["_source"]["indexed_at"]) for doc in found
            if doc.get("found") and doc.get("_source", {}).get("indexed_at")}


def fetch_labels(es: Any, settings: Settings, *, since: datetime | None = None,
                 read_since: datetime | None = None) -> list[StoredLabel]:
    """Every stored label, oldest first (by ``labeled_at``); skips malformed ones. With ``since``, only
    those labelled after it or, with ``read_since`` too, indexed after that (however they are dated)."""
    query: dict[str, Any] = {"match_all": {}}
    if since is not None:
        newer = [{"range": {"labeled_at": {"gt": since.isoformat()}}}]
        if read_since is not None:
            newer.append({"range": {"indexed_at": {"gt": read_since.isoformat()}}})
        query = {"bool": {"should": newer, "minimum_should_match": 1}}
    out = _scan(es, settings, query)
    out.sort(key=lambda r: r.labeled_at)
    return out


def fetch_labels_of(es: Any, settings: Settings, *, doc_ids: Iterable[str], texts: Iterable[str],
                    until: datetime) -> list[StoredLabel]:
    """Labels up to ``until`` with one of ``doc_ids``, or whose text may normalise to one of ``texts``.

    A superset for the texts (the index's text field is analysed, not a keyword); the caller
    (:func:`retrain.conflicts.with_related`) keeps the exact matches. One query per chunk of ids
    or texts, each well under Elasticsearch's 1024-clause limit.
    """
    out: list[StoredLabel] = []
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


def _scan(es: Any, settings: Settings, query: dict[str, Any]) -> list[StoredLabel]:
    out = []
    for hit in helpers.scan(es, index=settings.index("labels"), query={"query": query}, size=1000):
        try:
            out.append(parse_record(StoredLabel, hit["_source"], ignore_unknown=True))
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
