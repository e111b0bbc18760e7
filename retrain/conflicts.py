"""Label identity and the rule that settles conflicting labels for one document.

The rule (pure, applied whenever labels are used for training or evaluation):

1. A document is its ``doc_id`` when the label names one, else the SHA-256 of its text; this is
   a label's identity in the index. For the rule, labels that share a ``doc_id`` or a text (as the
   model reads it: links collapsed, case and spacing ignored) are one document: the model sees
   only the text, so two copies of it get one label, and never land on both sides of the
   training / held-back split.
2. Each annotator counts once per document: their latest label (by ``labeled_at``) replaces
   their earlier ones. The index enforces this too — a label's id is document + annotator.
3. If a trusted annotator (``FINSENT_TRUSTED_ANNOTATORS``) labelled the document, the latest
   trusted label wins, whatever the others say.
4. Otherwise the majority of annotators wins. A tie is left unresolved: the document is kept
   out of training and evaluation (a coin-flip label would teach noise) and reported.

A resolved document keeps the sources of all its labels, so a consumer can tell how it was chosen
for labelling (the performance monitor leaves out the review queue's, see retrain.drift_check).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from finsent.schemas import LabelRecord
from model.input_text import for_model


def document_key(doc_id: str | None, text: str) -> str:
    return f"doc:{doc_id}" if doc_id else "text:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def normalised_text(text: str) -> str:
    """The text as the model reads it (links collapsed), lower-cased, runs of white space as one space."""
    return " ".join(for_model(text).lower().split())


def text_key(text: str) -> str:
    return "text:" + hashlib.sha256(normalised_text(text).encode("utf-8")).hexdigest()[:32]


def label_id(record: LabelRecord) -> str:
    """Index id of a label: one per document and annotator, so a relabel overwrites."""
    key = f"{document_key(record.doc_id, record.text)}\x1f{record.annotator}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def parse_annotators(value: str) -> frozenset[str]:
    return frozenset(name.strip() for name in value.split(",") if name.strip())


@dataclass(frozen=True)
class ResolvedLabel:
    key: str  # the document's: the smallest text_key of its labels, so every copy of a text has one key
    doc_id: str | None
    text: str
    label: str
    labeled_at: datetime  # the newest label of the document: how fresh it is
    annotators: int
    rule: str  # "single" | "trusted" | "majority"
    # LabelRecord.source of every label of the document, replaced ones too: one from the review page
    # means the review queue chose it, whichever label won.
    sources: frozenset[str] = frozenset()
    indexed_at: datetime | None = None  # the last time one of its labels was stored (retrain.label_store)


@dataclass(frozen=True)
class Unresolved:
    key: str
    text: str
    votes: dict[str, int]


def document_groups(records: Sequence[LabelRecord]) -> list[str]:
    """Each record's document key for the rule: records linked by a doc id or a text are one document.

    The key is the smallest ``text_key`` in the document, so it does not depend on the order of
    the records (the holdout split hashes it).
    """
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    texts = [text_key(r.text) for r in records]
    for record, text in zip(records, texts):
        a, b = root(text), root(f"doc:{record.doc_id}" if record.doc_id else text)
        parent[max(a, b)] = min(a, b)
    smallest: dict[str, str] = {}
    for text in texts:
        top = root(text)
        smallest[top] = min(smallest.get(top, text), text)
    return [smallest[root(text)] for text in texts]


def resolve(records: Iterable[LabelRecord], trusted: frozenset[str] = frozenset()
            ) -> tuple[list[ResolvedLabel], list[Unresolved]]:
    """Apply the rule above; results are ordered by ``labeled_at`` (oldest first)."""
    records = list(records)
    latest: dict[tuple[str, str], LabelRecord] = {}
    sources: dict[str, set[str]] = {}
    for record, key in zip(records, document_groups(records)):
        sources.setdefault(key, set()).add(record.source)
        slot = (key, record.annotator)
        kept = latest.get(slot)
        if kept is None or record.labeled_at >= kept.labeled_at:
            latest[slot] = record
    groups: dict[str, list[LabelRecord]] = {}
    for (key, _), record in latest.items():
        groups.setdefault(key, []).append(record)

    resolved, unresolved = [], []
    for key, group in groups.items():
        group.sort(key=lambda r: r.labeled_at, reverse=True)
        newest = group[0]
        trusted_labels = [r for r in group if r.annotator in trusted]
        if len(group) == 1:
            label, rule = newest.label, "single"
        elif trusted_labels:
            label, rule = trusted_labels[0].label, "trusted"
        else:
            votes = Counter(r.label for r in group)
            (first, n1), *rest = votes.most_common()
            if rest and rest[0][1] == n1:
                unresolved.append(Unresolved(key=key, text=newest.text, votes=dict(votes)))
                continue
            label, rule = first, "majority"
        doc_id = next((r.doc_id for r in group if r.doc_id), None)
        indexed_at = max((r.indexed_at for r in group if getattr(r, "indexed_at", None)), default=None)
        resolved.append(ResolvedLabel(key=key, doc_id=doc_id, text=newest.text, label=label,
                                      labeled_at=newest.labeled_at, annotators=len(group), rule=rule,
                                      sources=frozenset(sources[key]), indexed_at=indexed_at))
    resolved.sort(key=lambda r: r.labeled_at)
    return resolved, unresolved


def with_related(fresh: Sequence[LabelRecord],
                 fetch: Callable[[set[str], set[str]], Iterable[LabelRecord]]) -> list[LabelRecord]:
    """``fresh`` and every earlier label of the same documents, so the rule sees all their labels.

    ``fetch(doc_ids, normalised_texts)`` returns stored labels with one of those doc ids or texts
    (more is fine: they are matched exactly here). A label found may link further documents (a doc
    id labelled under two texts), so this asks again for what is new until nothing is.
    """
    found = {label_id(r): r for r in fresh}
    doc_ids: set[str] = set()
    texts: set[str] = set()
    new = list(fresh)
    while new:
        more_ids = {r.doc_id for r in new if r.doc_id} - doc_ids
        more_texts = {normalised_text(r.text) for r in new} - texts
        if not more_ids and not more_texts:
            break
        doc_ids |= more_ids
        texts |= more_texts
        new = [r for r in fetch(more_ids, more_texts) if label_id(r) not in found
               and (r.doc_id in doc_ids or normalised_text(r.text) in texts)]
        found.update((label_id(r), r) for r in new)
    return sorted(found.values(), key=lambda r: r.labeled_at)


def split_holdout(labels: Iterable[ResolvedLabel], fraction: float) -> tuple[list[ResolvedLabel], list[ResolvedLabel]]:
    """Deterministic train / held-back split by document key: a document, and so every copy of its
    text, never changes side."""
    train, held = [], []
    for item in labels:
        bucket = int(hashlib.sha256(item.key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if bucket < fraction else train).append(item)
    return train, held
