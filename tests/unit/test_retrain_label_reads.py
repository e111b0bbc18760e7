"""A retrain reads the labels index once: the fresh labels and the earlier ones are picked from that one read
(Context.all_labels), as the queries of retrain.label_store pick them. No Elasticsearch here: es is None."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finsent.settings import Settings
from retrain.context import Context
from retrain.label_store import StoredLabel

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
UNTIL, READ_AT = NOW - timedelta(days=2), NOW - timedelta(days=1)  # the champion's labels_until, labels_read_at


def _label(doc: str, label: str, labeled: timedelta, indexed: timedelta, annotator: str = "ann") -> StoredLabel:
    return StoredLabel(doc_id=doc, text=f"the text of {doc}", label=label, annotator=annotator,
                       labeled_at=NOW - labeled, indexed_at=NOW - indexed)


def test_the_fresh_and_the_earlier_labels_come_from_one_read() -> None:
    stored = sorted([
        _label("seen", "neutral", timedelta(days=3), timedelta(days=3)),  # the champion saw it
        _label("relabelled", "negative", timedelta(days=3), timedelta(days=3), annotator="lead"),  # trusted, older
        _label("relabelled", "positive", timedelta(hours=5), timedelta(hours=5)),  # after labels_until
        _label("imported", "positive", timedelta(days=5), timedelta(hours=2)),  # back-dated, stored after the read
        _label("ahead", "negative", timedelta(days=-2), timedelta(hours=1)),  # dated in the future: left out
    ], key=lambda r: r.labeled_at)
    ctx = Context(settings=Settings(trusted_annotators="lead"), es=None, registry=None, producer=None, metrics=None,
                  clock=lambda: NOW)
    champion = {"labels_until": UNTIL.isoformat(), "labels_read_at": READ_AT.isoformat()}
    fresh, unresolved = ctx.fresh_labels(champion, stored)
    assert {(r.doc_id, r.label, r.rule) for r in fresh} == {("relabelled", "negative", "trusted"),
                                                            ("imported", "positive", "single")}
    assert unresolved == []
    assert [(r.doc_id, r.label) for r in ctx.earlier_labels(fresh, stored)] == [("seen", "neutral")]
