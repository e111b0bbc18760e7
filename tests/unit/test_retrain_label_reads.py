"""A retrain that trains reads every label once: the fresh labels and the earlier ones are picked from that one read
(Context.all_labels), as the queries of retrain.label_store pick them. One that the gate skips reads the fresh labels
only. No Elasticsearch here: es is None, or a stand-in, and the label reads go to a list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from finsent.settings import Settings
from model.registry import Registry
from retrain.context import Context, is_fresh
from retrain.label_store import StoredLabel
from retrain.metrics import RetrainMetrics
from retrain.retraining import run_retrain
from tests.unit.test_retrain_promotion import AuditIndex

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


class _LabelStore:
    """label_store.fetch_labels and fetch_labels_of over a list (their queries as is_fresh mirrors them), recording
    each read and how many labels it returned."""

    def __init__(self, labels: list[StoredLabel]) -> None:
        self.labels = sorted(labels, key=lambda r: r.labeled_at)
        self.reads: list[tuple[str, int]] = []

    def fetch_labels(self, es, settings, *, since=None, read_since=None) -> list[StoredLabel]:
        out = [label for label in self.labels if is_fresh(label, since, read_since)]
        self.reads.append(("every label" if since is None else "fresh", len(out)))
        return out

    def fetch_labels_of(self, es, settings, *, doc_ids, texts, until) -> list[StoredLabel]:
        out = [label for label in self.labels
               if label.labeled_at <= until and (label.doc_id in doc_ids or label.text in texts)]
        self.reads.append(("related", len(out)))
        return out


def _retrain(tmp_path, monkeypatch, fresh: int) -> tuple[_LabelStore, Context]:
    """A champion that saw 500 labels, ``fresh`` labels since (the first a relabel of one it saw), and a context
    whose label reads go to a counting store."""
    seen = [_label(f"seen{i}", "neutral", timedelta(days=3), timedelta(days=3)) for i in range(500)]
    new = [_label("seen0" if i == 0 else f"new{i}", "positive", timedelta(hours=5, minutes=i), timedelta(hours=5))
           for i in range(fresh)]
    store = _LabelStore(seen + new)
    monkeypatch.setattr("retrain.context.fetch_labels", store.fetch_labels)
    monkeypatch.setattr("retrain.context.fetch_labels_of", store.fetch_labels_of)
    settings = Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models", retrain_min_labels=20)
    registry = Registry(settings.models_path)
    folder = tmp_path / "champion"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    registry.promote(registry.register(folder, {"labels_until": UNTIL.isoformat(),
                                                "labels_read_at": READ_AT.isoformat()}))
    return store, Context(settings=settings, es=AuditIndex(), registry=registry, producer=None,
                          metrics=RetrainMetrics(), clock=lambda: NOW)


def test_a_retrain_the_gate_skips_reads_only_the_fresh_labels(tmp_path, monkeypatch) -> None:
    # It read every label ever stored (503 here) to count 3 fresh ones, every week and after every drift check.
    store, ctx = _retrain(tmp_path, monkeypatch, fresh=3)
    outcome = run_retrain(ctx, trigger="cron")
    assert (outcome.decision, outcome.reasons) == ("skipped", ["3 fresh labels, need 20"])
    assert store.reads == [("fresh", 3), ("related", 1)]  # and the relabelled document's older label
    assert ctx.es.docs[-1]["fresh_labels"] == 3


def test_a_retrain_the_gate_lets_through_trains_on_one_read_of_every_label(tmp_path, monkeypatch) -> None:
    from model.training import TrainingStopped
    from retrain import golden as goldenmod

    store, ctx = _retrain(tmp_path, monkeypatch, fresh=30)
    trained: list[str] = []

    def train(rows, *, extra_rows, **kwargs):
        trained.extend(row.source for row in extra_rows)
        raise TrainingStopped("enough: the rows are what is under test")

    monkeypatch.setattr("model.training.train", train)
    monkeypatch.setattr(goldenmod, "data_paths", lambda s: [])
    monkeypatch.setattr(goldenmod, "load_rows", lambda paths: [])
    monkeypatch.setattr(goldenmod, "ensure_golden", lambda s, r, **kw: [])
    assert run_retrain(ctx, trigger="cron").decision == "stopped"
    assert store.reads == [("fresh", 30), ("related", 1), ("every label", 530)]
    # Of the fresh labels, those not held back to judge; and the 499 the champion saw of documents with no fresh one.
    assert 0 < trained.count("fresh") < 30 and trained.count("earlier") == 499


class _AttemptedRecently(AuditIndex):
    """The retrain index with one rejected attempt ten minutes ago (the cooldown is an hour by default)."""

    def search(self, **kwargs):
        return {"hits": {"hits": [{"_source": {
            "decided_at": (NOW - timedelta(minutes=10)).isoformat(), "decision": "rejected",
            "labels_until": UNTIL.isoformat(), "labels_read_at": READ_AT.isoformat()}}]}}


@pytest.mark.parametrize(("trigger", "drift_detected", "reason"), [
    ("drift", False, "no drift detected"),
    ("drift", True, "within the cooldown"),
    ("cron", False, "within the cooldown"),
])
def test_a_retrain_skipped_whatever_the_labels_reads_none(tmp_path, monkeypatch, trigger, drift_detected,
                                                          reason) -> None:
    # It read the fresh labels (and their documents' older ones) for each drift retrain within the cooldown.
    store, ctx = _retrain(tmp_path, monkeypatch, fresh=30)
    ctx.es = _AttemptedRecently()
    outcome = run_retrain(ctx, trigger=trigger, drift_detected=drift_detected)
    assert outcome.decision == "skipped" and reason in outcome.reasons[0]
    assert store.reads == []
    if drift_detected or trigger != "drift":  # a drift retrain without drift is not audited
        assert ctx.es.docs[-1]["fresh_labels"] is None and ctx.es.docs[-1]["labels_read_at"] is None
    else:
        assert ctx.es.docs == []


def test_a_manual_retrain_within_the_cooldown_reads_the_labels(tmp_path, monkeypatch) -> None:
    store, ctx = _retrain(tmp_path, monkeypatch, fresh=3)
    ctx.es = _AttemptedRecently()
    assert run_retrain(ctx, trigger="manual").reasons == ["3 fresh labels, need 20"]
    assert store.reads == [("fresh", 3), ("related", 1)]
