"""The review queue: recent unlabelled documents from ``<prefix>-docs``, most useful first.

Reads the candidates and the latest input-drift record (its novel tokens are the drifted
region) and ranks them with :func:`retrain.ranking.rank`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from finsent.schemas import utc_now
from finsent.settings import Settings
from retrain.label_store import labeled_doc_ids
from retrain.ranking import ReviewItem, rank

# LabelRecord.source of a label given on the review page (dashboards/static/review.js sends it). The
# queue picks the documents the model is least sure of, so the performance monitor leaves these out.
REVIEW_SOURCE = "review"
_FIELDS = ["id", "title", "text", "tickers", "sentiment", "model_version", "scored_at", "source", "url"]


def latest_novel_tokens(es: Any, settings: Settings) -> list[str]:
    resp = es.options(ignore_status=404).search(
        index=settings.index("drift"), size=1, sort=[{"checked_at": "desc"}],
        query={"term": {"monitor": "input"}}, source=["details"])
    hits = resp.get("hits", {}).get("hits", []) if resp else []
    if not hits:
        return []
    return list((hits[0]["_source"].get("details") or {}).get("novel_tokens") or [])


def review_queue(es: Any, settings: Settings, *, limit: int = 20, now: datetime | None = None) -> list[ReviewItem]:
    since = (now or utc_now()) - timedelta(hours=settings.review_lookback_hours)
    resp = es.search(index=settings.index("docs"), size=settings.review_candidates, source=_FIELDS,
                     sort=[{"scored_at": "desc"}], query={"range": {"scored_at": {"gte": since.isoformat()}}})
    docs = [hit["_source"] for hit in resp["hits"]["hits"]]
    done = labeled_doc_ids(es, settings, (d["id"] for d in docs if d.get("id")))
    return rank(docs, novel_tokens=latest_novel_tokens(es, settings), drift_weight=settings.review_drift_weight,
                limit=limit, exclude=done)
