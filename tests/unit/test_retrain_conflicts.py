"""Conflict resolution across copies of a text, and over the earlier labels of freshly labelled documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finsent.schemas import LabelRecord
from retrain.conflicts import document_groups, normalised_text, resolve, split_holdout
from retrain.context import label_cutoff, resolve_fresh
from retrain.label_store import related_clauses

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CUTOFF = T0 + timedelta(hours=1)


def lab(label: str, annotator: str, minutes: int, doc_id: str | None = "d1", text: str = "t",
        source: str = "api") -> LabelRecord:
    return LabelRecord(doc_id=doc_id, text=text, label=label, annotator=annotator, source=source,
                       labeled_at=T0 + timedelta(minutes=minutes))


def test_copies_of_a_text_land_on_one_side_of_the_holdout() -> None:
    # The same headline labelled under a doc id, without one, and as another document: one document.
    records = []
    for i in range(200):
        records += [lab("positive", "a", i, doc_id=f"d{i}", text=f"Shares rose {i} https://t.co/a{i}"),
                    lab("positive", "b", i, doc_id=None, text=f"shares  rose {i} https://t.co/b{i} "),
                    lab("positive", "c", i, doc_id=f"e{i}", text=f"SHARES rose {i}\nwww.example.com/x")]
    resolved, unresolved = resolve(records)
    assert len(resolved) == 200 and not unresolved and {r.annotators for r in resolved} == {3}
    train, held = split_holdout(resolved, 0.3)
    assert held and train
    assert not {normalised_text(r.text) for r in train} & {normalised_text(r.text) for r in held}


def test_copies_of_a_text_resolve_by_the_rule() -> None:
    # A trusted label on one copy wins over the other copy's label.
    resolved, _ = resolve([lab("negative", "lead", 1, doc_id="x", text="Guidance cut"),
                           lab("positive", "a", 5, doc_id="y", text="guidance cut")], trusted=frozenset({"lead"}))
    assert [(r.label, r.rule, r.annotators) for r in resolved] == [("negative", "trusted", 2)]
    # Copies labelled differently by two annotators: a tie, kept out.
    resolved, unresolved = resolve([lab("negative", "a", 1, doc_id="x", text="Guidance cut"),
                                    lab("positive", "b", 5, doc_id=None, text="Guidance cut")])
    assert not resolved and unresolved[0].votes == {"negative": 1, "positive": 1}
    # One annotator labelling two copies counts once: their latest label.
    resolved, _ = resolve([lab("negative", "a", 1, doc_id="x", text="Guidance cut"),
                           lab("positive", "a", 5, doc_id="y", text="Guidance cut")])
    assert [(r.label, r.rule) for r in resolved] == [("positive", "single")]


def test_document_groups_follow_doc_ids_and_texts_in_any_order() -> None:
    records = [lab("positive", "a", 1, doc_id="d1", text="A"), lab("positive", "b", 2, doc_id="d1", text="B"),
               lab("positive", "c", 3, doc_id=None, text="b"), lab("positive", "d", 4, doc_id="d2", text="C")]
    keys = document_groups(records)
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert document_groups(records[::-1]) == keys[::-1]


def test_a_document_labelled_on_the_review_page_keeps_the_mark_whichever_label_wins() -> None:
    resolved, _ = resolve([
        # d1: the review label loses to a trusted one; still the queue chose the document.
        lab("positive", "a", 1, doc_id="d1", text="One", source="review"),
        lab("negative", "lead", 2, doc_id="d1", text="One"),
        # d2: the annotator relabelled through the API; their replaced review label still marks it.
        lab("neutral", "b", 3, doc_id="d2", text="Two", source="review"),
        lab("positive", "b", 4, doc_id="d2", text="Two"),
        # d3: never on the review page.
        lab("neutral", "c", 5, doc_id="d3", text="Three", source="csv"),
        lab("neutral", "d", 6, doc_id="d3", text="Three")], trusted=frozenset({"lead"}))
    assert [(r.doc_id, r.label, r.rule, r.sources) for r in resolved] == [
        ("d1", "negative", "trusted", {"api", "review"}), ("d2", "positive", "single", {"api", "review"}),
        ("d3", "neutral", "majority", {"api", "csv"})]


def fetch_from(stored: list[LabelRecord], calls: list[tuple[set[str], set[str]]]):
    def related(doc_ids: set[str], texts: set[str]) -> list[LabelRecord]:
        calls.append((doc_ids, texts))
        return [r for r in stored if r.labeled_at <= CUTOFF]  # more than asked for, as Elasticsearch may give
    return related


def test_an_earlier_trusted_label_still_wins_over_a_fresh_one() -> None:
    stored = [lab("negative", "lead", 0, doc_id="d1", text="Guidance cut"),
              lab("neutral", "x", 10, doc_id="d9", text="Unrelated"),
              lab("positive", "x", 120, doc_id="d1", text="Guidance cut")]
    fresh = [r for r in stored if r.labeled_at > CUTOFF]
    calls: list = []
    resolved, unresolved, future = resolve_fresh(fresh, fetch_from(stored, calls), cutoff=CUTOFF,
                                                 now=T0 + timedelta(days=1), trusted=frozenset({"lead"}))
    assert [(r.label, r.rule, r.labeled_at) for r in resolved] == [("negative", "trusted", fresh[0].labeled_at)]
    assert not unresolved and not future
    assert calls[0] == ({"d1"}, {"guidance cut"})


def test_earlier_labels_are_followed_through_linked_documents() -> None:
    # d1's fresh label; d1 was labelled earlier under another text, which b labelled without a doc id.
    stored = [lab("negative", "lead", 0, doc_id="d1", text="Old title"),
              lab("negative", "b", 5, doc_id=None, text="old title"),
              lab("neutral", "c", 6, doc_id=None, text="old title"),
              lab("positive", "x", 120, doc_id="d1", text="New title")]
    calls: list = []
    resolved, _, _ = resolve_fresh(stored[3:], fetch_from(stored, calls), cutoff=CUTOFF,
                                   now=T0 + timedelta(days=1), trusted=frozenset())
    assert [(r.label, r.rule, r.annotators) for r in resolved] == [("negative", "majority", 4)]
    assert calls == [({"d1"}, {"new title"}), (set(), {"old title"})]


def test_labels_dated_in_the_future_are_left_out() -> None:
    now = T0 + timedelta(days=1)
    fresh = [lab("positive", "x", 120, doc_id="d1"),
             LabelRecord(doc_id="d2", text="Later", label="negative", annotator="y",
                         labeled_at=datetime(2099, 1, 1, tzinfo=UTC))]
    resolved, _, future = resolve_fresh(fresh, lambda ids, texts: [], cutoff=None, now=now, trusted=frozenset())
    assert [r.doc_id for r in resolved] == ["d1"] and [r.doc_id for r in future] == ["d2"]
    assert resolved[-1].labeled_at < now  # so labels_until stays a real time


def test_a_labels_until_in_the_future_is_replaced_by_the_champions_creation() -> None:
    now = T0 + timedelta(days=1)
    assert label_cutoff(None, now) is None and label_cutoff({"version": "v1"}, now) is None
    assert label_cutoff({"labels_until": CUTOFF.isoformat()}, now) == CUTOFF
    # Left by a label dated 2099 before intake refused it: no label would ever be fresh again.
    poisoned = {"labels_until": "2099-01-01T00:00:00+00:00", "created_at": (T0 + timedelta(hours=3)).isoformat()}
    assert label_cutoff(poisoned, now) == T0 + timedelta(hours=3)
    assert label_cutoff({"labels_until": "2099-01-01T00:00:00+00:00"}, now) == now


def test_related_clauses_stay_small_and_leave_out_the_link_placeholder() -> None:
    texts = [normalised_text(f"Shares of ACME rose {i} https://t.co/x") for i in range(45)]
    queries = related_clauses([f"d{i}" for i in range(1500)], texts + [normalised_text("https://t.co/only")])
    assert [len(q) for q in queries] == [1, 1, 20, 20, 5]
    assert queries[1] == [{"terms": {"doc_id": [f"d{i}" for i in range(1000, 1500)]}}]
    assert queries[2][0] == {"match": {"text": {"query": "shares of acme rose 0", "operator": "and"}}}
    long_text = " ".join(f"w{i}" for i in range(100))
    (clause,), = related_clauses([], [long_text])
    assert clause["match"]["text"]["query"].split() == [f"w{i}" for i in range(16)]


def test_a_resolved_label_is_as_recently_stored_as_its_newest_stored_label() -> None:
    from retrain.label_store import StoredLabel

    def stored(annotator: str, minutes: int, indexed_minutes: int | None) -> StoredLabel:
        indexed = T0 + timedelta(minutes=indexed_minutes) if indexed_minutes is not None else None
        return StoredLabel(doc_id="d1", text="t", label="neutral", annotator=annotator,
                           labeled_at=T0 + timedelta(minutes=minutes), indexed_at=indexed)

    [both], _ = resolve([stored("a", 50, 60), stored("b", 5, 90)])  # b's label, dated back, came later
    assert both.labeled_at == T0 + timedelta(minutes=50) and both.indexed_at == T0 + timedelta(minutes=90)
    [old], _ = resolve([stored("a", 5, None)])  # stored before indexed_at existed
    assert old.indexed_at is None
    [plain], _ = resolve([lab("neutral", "a", 5)])  # as the topic carries it
    assert plain.indexed_at is None
