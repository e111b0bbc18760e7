"""Active learning: which recent documents an analyst should label first (pure).

priority = (1 − w) · uncertainty + w · novelty, where uncertainty is the normalised entropy
of the model's probabilities and novelty is how much of the document lies in the drifted
region (tokens the latest input-drift check found new to the reference window; three or more
such tokens count fully). ``w`` is ``FINSENT_REVIEW_DRIFT_WEIGHT``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from retrain.statistics import entropy, margin, tokens

_FULL_NOVELTY_TOKENS = 3


@dataclass(frozen=True)
class ReviewItem:
    doc_id: str
    text: str
    title: str | None
    predicted: str
    probabilities: dict[str, float]
    uncertainty: float
    margin: float
    novelty: float
    priority: float
    model_version: str | None
    scored_at: str | None
    tickers: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def novelty(text: str, novel_tokens: frozenset[str]) -> float:
    if not novel_tokens:
        return 0.0
    hits = len(set(tokens(text)) & novel_tokens)
    return min(1.0, hits / _FULL_NOVELTY_TOKENS)


def rank(docs: Iterable[Mapping[str, Any]], *, novel_tokens: Iterable[str] = (), drift_weight: float = 0.3,
         limit: int = 20, exclude: Iterable[str] = ()) -> list[ReviewItem]:
    """Rank scored documents (``finsent-docs`` sources); skips excluded ids and malformed ones."""
    novel = frozenset(novel_tokens)
    skip = set(exclude)
    items = []
    for doc in docs:
        sentiment = doc.get("sentiment") or {}
        probs = sentiment.get("probabilities") or {}
        doc_id, text = doc.get("id"), doc.get("text")
        if not doc_id or not text or not probs or doc_id in skip:
            continue
        skip.add(doc_id)  # one entry per document even if the source listed it twice
        u, n = entropy(probs), novelty(text, novel)
        items.append(ReviewItem(
            doc_id=doc_id, text=text, title=doc.get("title"), predicted=sentiment.get("label", ""),
            probabilities={k: float(v) for k, v in probs.items()}, uncertainty=round(u, 6),
            margin=round(margin(probs), 6), novelty=round(n, 6),
            priority=round((1 - drift_weight) * u + drift_weight * n, 6),
            model_version=doc.get("model_version"), scored_at=doc.get("scored_at"),
            tickers=list(doc.get("tickers") or []),
        ))
    items.sort(key=lambda item: (-item.priority, item.margin, item.doc_id))
    return items[:limit]
