"""Pure rules of retrain/: label conflicts, holdout split, retrain gate, promotion, review ranking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from finsent.schemas import LabelRecord
from retrain.conflicts import ResolvedLabel, document_key, label_id, parse_annotators, resolve, split_holdout
from retrain.decision import LastAttempt, PromotionPolicy, Scores, decide_promotion, should_retrain
from retrain.ranking import rank

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def lab(label: str, annotator: str, minutes: int, doc_id: str | None = "d1", text: str = "t") -> LabelRecord:
    return LabelRecord(doc_id=doc_id, text=text, label=label, annotator=annotator,
                       labeled_at=T0 + timedelta(minutes=minutes))


def test_latest_label_of_an_annotator_replaces_earlier() -> None:
    resolved, unresolved = resolve([lab("positive", "ann", 2), lab("negative", "ann", 1)])
    assert [(r.label, r.rule) for r in resolved] == [("positive", "single")]
    assert not unresolved


def test_trusted_annotator_wins_over_majority() -> None:
    records = [lab("positive", "a", 1), lab("positive", "b", 2), lab("negative", "lead", 0)]
    resolved, _ = resolve(records, trusted=frozenset({"lead"}))
    assert resolved[0].label == "negative" and resolved[0].rule == "trusted"
    assert resolved[0].labeled_at == T0 + timedelta(minutes=2)  # freshness = newest label
    resolved, _ = resolve(records)
    assert resolved[0].label == "positive" and resolved[0].rule == "majority"


def test_latest_trusted_label_wins_among_trusted() -> None:
    records = [lab("negative", "lead", 1), lab("neutral", "boss", 5), lab("positive", "x", 9)]
    resolved, _ = resolve(records, trusted=parse_annotators("lead, boss"))
    assert resolved[0].label == "neutral"


def test_tie_is_unresolved() -> None:
    resolved, unresolved = resolve([lab("positive", "a", 1), lab("negative", "b", 2)])
    assert resolved == [] and unresolved[0].votes == {"positive": 1, "negative": 1}


def test_documents_without_id_group_by_text() -> None:
    records = [lab("positive", "a", 1, doc_id=None, text="same"), lab("positive", "b", 2, doc_id=None, text="same"),
               lab("negative", "a", 3, doc_id=None, text="other")]
    resolved, _ = resolve(records)
    assert sorted(r.label for r in resolved) == ["negative", "positive"]
    assert document_key(None, "same") == document_key(None, "same") != document_key("x", "same")


def test_label_id_is_document_plus_annotator() -> None:
    assert label_id(lab("positive", "a", 1)) == label_id(lab("negative", "a", 9))
    assert label_id(lab("positive", "a", 1)) != label_id(lab("positive", "b", 1))


def test_holdout_split_is_deterministic_and_roughly_sized() -> None:
    records = [lab("positive", "a", i, doc_id=f"d{i}", text=f"t{i}") for i in range(400)]
    resolved, _ = resolve(records)
    train, held = split_holdout(resolved, 0.3)
    train2, held2 = split_holdout(list(reversed(resolved)), 0.3)
    assert {r.key for r in held} == {r.key for r in held2}
    assert 80 < len(held) < 160 and len(train) + len(held) == 400


def test_promotion_rejects_challenger_worse_on_golden() -> None:
    decision = decide_promotion(Scores(0.8, 0.80, 500), Scores(0.7, 0.70, 500),
                                Scores(0.5, 0.50, 40), Scores(0.9, 0.90, 40))
    assert not decision.promote
    assert any("golden" in r for r in decision.reasons)
    assert decision.figures["golden_drop"] == 0.1


def test_promotion_requires_gain_on_fresh_labels() -> None:
    policy = PromotionPolicy(golden_tolerance=0.02, min_fresh_gain=0.0, min_fresh_eval=10)
    same = decide_promotion(Scores(0.8, 0.8, 500), Scores(0.8, 0.8, 500), Scores(0.6, 0.6, 40),
                            Scores(0.6, 0.6, 40), policy)
    assert not same.promote and "not better" in same.reasons[0]
    few = decide_promotion(Scores(0.8, 0.8, 500), Scores(0.8, 0.8, 500), Scores(0.6, 0.6, 3),
                           Scores(0.9, 0.9, 3), policy)
    assert not few.promote and "held-back" in few.reasons[0]
    good = decide_promotion(Scores(0.8, 0.80, 500), Scores(0.79, 0.79, 500), Scores(0.6, 0.6, 40),
                            Scores(0.7, 0.7, 40), policy)
    assert good.promote and good.figures["challenger_fresh_macro_f1"] == 0.7


def test_a_fresh_gain_must_pass_a_sign_test_on_the_rows_only_one_model_gets_right() -> None:
    from retrain.decision import sign_test

    golden = Scores(0.8, 0.8, 500)
    # 12 held-back labels: the challenger gains 2 rows net (3 won, 1 lost): p 0.31, luck as often as not.
    old = (True,) * 6 + (False,) * 3 + (True,) + (False,) * 2
    new = (True,) * 6 + (True,) * 3 + (False,) + (False,) * 2
    assert sign_test(old, new) == (3, 1, 0.3125)
    lucky = decide_promotion(golden, golden, Scores(0.58, 0.55, 12, old), Scores(0.75, 0.72, 12, new))
    assert not lucky.promote and "sign test p 0.312 > 0.2" in lucky.reasons[0]
    assert lucky.figures["fresh_only_challenger_right"] == 3 and lucky.figures["fresh_sign_p"] == 0.3125
    assert "challenger_fresh_correct" not in lucky.figures  # the per-row list stays out of the audit
    # Five rows won and none lost: p 1/32.
    clear = (True,) * 6 + (True,) * 5 + (False,)
    old5 = (True,) * 6 + (False,) * 5 + (False,)
    shown = decide_promotion(golden, golden, Scores(0.5, 0.5, 12, old5), Scores(0.9, 0.9, 12, clear))
    assert shown.promote and shown.figures["fresh_sign_p"] == 0.03125
    off = decide_promotion(golden, golden, Scores(0.58, 0.55, 12, old), Scores(0.75, 0.72, 12, new),
                           PromotionPolicy(max_p=1.0))
    assert off.promote
    assert sign_test((True, False), (True, False)) == (0, 0, 1.0)  # no row told them apart


def test_retrain_gate() -> None:
    now = T0 + timedelta(days=1)
    base = dict(fresh_labels=100, newest_label=now, min_labels=50, last_attempt=None, now=now,
                cooldown=timedelta(hours=1))
    assert should_retrain(trigger="drift", drift_detected=True, **base)[0]
    assert not should_retrain(trigger="drift", drift_detected=False, **base)[0]
    assert should_retrain(trigger="cron", drift_detected=False, **base)[0]
    assert not should_retrain(trigger="drift", drift_detected=True, **(base | {"fresh_labels": 10}))[0]
    recent = LastAttempt(at=now - timedelta(minutes=5), labels_until=now - timedelta(hours=2))
    assert "cooldown" in should_retrain(trigger="drift", drift_detected=True, **(base | {"last_attempt": recent}))[1]
    same_data = LastAttempt(at=now - timedelta(hours=3), labels_until=now)
    go, why = should_retrain(trigger="drift", drift_detected=True, **(base | {"last_attempt": same_data}))
    assert not go and "no labels since" in why
    assert should_retrain(trigger="manual", drift_detected=False, **(base | {"last_attempt": same_data}))[0]
    # A labels_until dated ahead (a label from the future, before intake refused them) holds nothing back.
    ahead = LastAttempt(at=now - timedelta(hours=3), labels_until=datetime(2099, 1, 1, tzinfo=UTC))
    assert should_retrain(trigger="cron", drift_detected=False, **(base | {"last_attempt": ahead}))[0]
    # A failed attempt decided nothing: after its cooldown the same labels are tried again.
    failed = LastAttempt(at=now - timedelta(hours=3), labels_until=now, failed=True)
    assert should_retrain(trigger="cron", drift_detected=False, **(base | {"last_attempt": failed}))[0]
    failed_recently = LastAttempt(at=now - timedelta(minutes=5), labels_until=now, failed=True)
    assert "cooldown" in should_retrain(trigger="cron", drift_detected=False,
                                        **(base | {"last_attempt": failed_recently}))[1]


def test_a_label_dated_back_but_stored_after_the_last_attempt_read_the_labels_is_new_to_it() -> None:
    now = T0 + timedelta(days=1)
    read_at = now - timedelta(hours=3)
    attempt = LastAttempt(at=read_at, labels_until=now - timedelta(hours=4), labels_read_at=read_at)
    base = dict(trigger="cron", drift_detected=False, fresh_labels=100, min_labels=50, last_attempt=attempt, now=now,
                cooldown=timedelta(hours=1), newest_label=now - timedelta(days=30))  # an import of last month's labels
    go, why = should_retrain(**(base | {"newest_indexed": read_at + timedelta(minutes=1)}))
    assert go, why
    go, why = should_retrain(**(base | {"newest_indexed": read_at - timedelta(minutes=1)}))  # the attempt saw it
    assert not go and "no labels since" in why
    # An attempt recorded before labels_read_at existed judges by labeled_at alone, as it did.
    old = LastAttempt(at=read_at, labels_until=now - timedelta(hours=4))
    assert not should_retrain(**(base | {"last_attempt": old, "newest_indexed": now}))[0]


def test_the_labels_a_retrain_saw_never_move_back() -> None:
    from retrain.retraining import LabelsSeen

    def resolved(day: int) -> ResolvedLabel:
        return ResolvedLabel(key=f"k{day}", doc_id=None, text="t", label="neutral",
                             labeled_at=T0 + timedelta(days=day), annotators=1, rule="single")

    read_at = T0 + timedelta(days=40)
    assert LabelsSeen.of([resolved(1), resolved(31)], T0 + timedelta(days=30), read_at).until == T0 + timedelta(days=31)
    # Labels dated back only: the watermark stays at the champion's, or older labels would be fresh again.
    assert LabelsSeen.of([resolved(1), resolved(2)], T0 + timedelta(days=30), read_at).until == T0 + timedelta(days=30)
    assert LabelsSeen.of([resolved(1)], None, read_at) == LabelsSeen(T0 + timedelta(days=1), read_at)
    assert LabelsSeen.of([], None, read_at).until is None


def doc(doc_id: str, probs: tuple[float, float, float], text: str = "plain words here") -> dict:
    return {"id": doc_id, "text": text, "model_version": "v1", "tickers": ["AAPL"],
            "sentiment": {"label": "neutral", "probabilities": dict(zip(("negative", "neutral", "positive"), probs))}}


def test_rank_by_uncertainty_then_drifted_region() -> None:
    docs = [doc("sure", (0.01, 0.98, 0.01)), doc("unsure", (0.34, 0.33, 0.33)), doc("mid", (0.2, 0.6, 0.2)),
            doc("novel", (0.05, 0.9, 0.05), text="memecoin airdrop tokenomics pump"), {"id": "broken"}]
    plain = rank(docs, drift_weight=0.0, limit=10)
    assert [i.doc_id for i in plain] == ["unsure", "mid", "novel", "sure"]
    drifted = rank(docs, novel_tokens=["memecoin", "airdrop", "tokenomics"], drift_weight=0.6, limit=2)
    assert [i.doc_id for i in drifted] == ["novel", "unsure"]
    assert drifted[0].novelty == 1.0
    assert [i.doc_id for i in rank(docs, exclude=["unsure"], limit=1)] == ["mid"]


def test_stratified_sample_exact_size_keeps_shares_and_is_seeded() -> None:
    from retrain.golden import Row, replay_sample, stratified_sample

    rows = ([Row(f"a{i}", "positive", "fpb") for i in range(70)] + [Row(f"b{i}", "negative", "fpb") for i in range(20)]
            + [Row(f"c{i}", "neutral", "tw") for i in range(10)])
    sample = stratified_sample(rows, 29, seed=1)
    assert len(sample) == 29 and len({r.text for r in sample}) == 29
    counts = {label: sum(r.label == label for r in sample) for label in ("positive", "negative", "neutral")}
    assert counts == {"positive": 20, "negative": 6, "neutral": 3}
    assert stratified_sample(rows, 29, seed=1) == sample
    replay = replay_sample(rows, 50, exclude=sample, seed=2)
    assert len(replay) == 50 and not {r.text for r in replay} & {r.text for r in sample}


def _weekdays(cron: str) -> list[int]:
    """Python weekdays (Monday = 0) of the fallback retrain's runs over two weeks, through the scheduler's job."""
    from finsent.settings import Settings
    from retrain.scheduler import CRON_JOB, RetrainScheduler

    trigger = RetrainScheduler(Settings(retrain_cron=cron))._desired()[CRON_JOB][1]
    runs, at = [], T0
    while (at := trigger.get_next_fire_time(None, at + timedelta(seconds=1))) < T0 + timedelta(days=14):
        runs.append(at.weekday())
    return runs


def test_retrain_cron_reads_day_of_week_as_crontab_does() -> None:
    assert _weekdays("0 3 * * 0") == [6, 6]  # the default: Sundays
    assert _weekdays("0 3 * * 7") == [6, 6]
    assert _weekdays("0 3 * * 1-5") == [2, 3, 4, 0, 1, 2, 3, 4, 0, 1]  # T0 is a Wednesday
    assert sorted(set(_weekdays("0 3 * * */2"))) == [1, 3, 5, 6]  # Sun, Tue, Thu, Sat
    assert sorted(set(_weekdays("0 3 * * sat-sun,3"))) == [2, 5, 6]
    assert sorted(set(_weekdays("0 3 * * 1-5/2"))) == [0, 2, 4]


@pytest.mark.parametrize("cron", ["0 3 * * 8", "0 3 * * 1/2", "0 3 * * 5-1", "0 3 1 * 1", "0 3 * *"])
def test_retrain_cron_refuses_what_it_cannot_translate(cron: str) -> None:
    from finsent.settings import Settings
    from retrain.scheduler import RetrainScheduler

    with pytest.raises(ValueError, match="FINSENT_RETRAIN_CRON"):
        RetrainScheduler(Settings(retrain_cron=cron))._desired()
