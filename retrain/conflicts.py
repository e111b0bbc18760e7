"""Label identity and the rule that settles conflicting labels for one document.

The rule (pure, applied whenever labels are used for training or evaluation):

1. A document is its ``doc_id`` when the label names one, else the SHA-256 of its text.
2. Each annotator counts once per document: their latest label (by ``labeled_at``) replaces
   their earlier ones. The index enforces this too — a label's id is document + annotator.
3. If a trusted annotator (``FINSENT_TRUSTED_ANNOTATORS``) labelled the document, the latest
   trusted label wins, whatever the others say.
4. Otherwise the majority of annotators wins. A tie is left unresolved: the document is kept
   out of training and evaluation (a coin-flip label would teach noise) and reported.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from finsent.schemas import LabelRecord


def document_key(doc_id: str | None, text: str) -> str:
    return f"doc:{doc_id}" if doc_id else "text:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def label_id(record: LabelRecord) -> str:
    """Index id of a label: one per document and annotator, so a relabel overwrites."""
    key = f"{document_key(record.doc_id, record.text)}\x1f{record.annotator}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def parse_annotators(value: str) -> frozenset[str]:
    return frozenset(name.strip() for name in value.split(",") if name.strip())


@dataclass(frozen=True)
class ResolvedLabel:
    key: str
    doc_id: str | None
    text: str
    label: str
    labeled_at: datetime  # the newest label of the document: how fresh it is
    annotators: int
    rule: str  # "single" | "trusted" | "majority"


@dataclass(frozen=True)
class Unresolved:
    key: str
    text: str
    votes: dict[str, int]


def resolve(records: Iterable[LabelRecord], trusted: frozenset[str] = frozenset()
            ) -> tuple[list[ResolvedLabel], list[Unresolved]]:
    """Apply the rule above; results are ordered by ``labeled_at`` (oldest first)."""
    latest: dict[tuple[str, str], LabelRecord] = {}
    for record in records:
        slot = (document_key(record.doc_id, record.text), record.annotator)
        kept = latest.get(slot)
        if kept is None or record.labeled_at >= kept.labeled_at:
            latest[slot] = record
    groups: dict[str, list[LabelRecord]] = {}
    for (key, _), record in latest.items():
        groups.setdefault(key, []).append(record)

    resolved, unresolved = [], []
    for key, group in groups.items():
        newest = max(group, key=lambda r: r.labeled_at)
        trusted_labels = [r for r in group if r.annotator in trusted]
        if len(group) == 1:
            label, rule = group[0].label, "single"
        elif trusted_labels:
            label, rule = max(trusted_labels, key=lambda r: r.labeled_at).label, "trusted"
        else:
            votes = Counter(r.label for r in group)
            (first, n1), *rest = votes.most_common()
            if rest and rest[0][1] == n1:
                unresolved.append(Unresolved(key=key, text=newest.text, votes=dict(votes)))
                continue
            label, rule = first, "majority"
        doc_id = next((r.doc_id for r in group if r.doc_id), None)
        resolved.append(ResolvedLabel(key=key, doc_id=doc_id, text=newest.text, label=label,
                                      labeled_at=newest.labeled_at, annotators=len(group), rule=rule))
    resolved.sort(key=lambda r: r.labeled_at)
    return resolved, unresolved


def split_holdout(labels: Iterable[ResolvedLabel], fraction: float) -> tuple[list[ResolvedLabel], list[ResolvedLabel]]:
    """Deterministic train / held-back split by document key: a document never changes side."""
    train, held = [], []
    for item in labels:
        bucket = int(hashlib.sha256(item.key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if bucket < fraction else train).append(item)
    return train, held
