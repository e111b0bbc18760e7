"""Cross-fitted distillation: folds, who sees which rows, target order, the mixed loss."""

import math
from collections import Counter

import pytest
import torch

from finsent.schemas import LABELS
from model.data import Example, stratified_split
from model.distillation import mixed_loss, out_of_fold_targets, soft_target_rows, stratified_folds, targets_summary


def _examples(n_per_stratum: int = 9) -> list[Example]:
    return [Example(f"{source} {label} {i}", label, source)
            for source in ("fpb", "tweets") for label in LABELS for i in range(n_per_stratum)]


def test_folds_are_stratified_and_seeded():
    examples = _examples()
    folds = stratified_folds(examples, 3, seed=5)
    assert folds == stratified_folds(examples, 3, seed=5)
    assert folds != stratified_folds(examples, 3, seed=6)
    per_fold = Counter((f, e.source, e.label) for f, e in zip(folds, examples))
    assert set(per_fold.values()) == {3}  # every stratum split evenly: 9 rows → 3 per fold
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_folds(examples, 1, seed=5)


def test_each_row_is_predicted_by_the_teacher_that_never_trained_on_it():
    examples = _examples()
    validation = {e.text for e in stratified_split(examples, 0.2, 13)[1]}
    seen: dict[int, set[str]] = {}

    def train_teacher(rows, fold):
        seen[fold] = {e.text for e in rows}

        def predict(texts):
            assert not set(texts) & seen[fold], "a teacher predicted a row it trained on"
            return [[0.1 * (fold + 1), 0.2, 1.0 - 0.1 * (fold + 1) - 0.2] for _ in texts]
        return predict

    targets = out_of_fold_targets(examples, k=3, seed=13, val_fraction=0.2, train_teacher=train_teacher)
    assert len(seen) == 3
    assert not validation & set().union(*seen.values()), "a validation row reached a teacher"
    assert set(targets) == {e.text for e in examples} - validation
    # Each training row was predicted once, by the one teacher whose rows lacked it.
    for text, probs in targets.items():
        (fold,) = [f for f, rows in seen.items() if text not in rows]
        assert probs[0] == pytest.approx(0.1 * (fold + 1))


def test_soft_targets_follow_the_models_label_order():
    targets = {"a": [0.7, 0.2, 0.1]}  # LABELS order: negative, neutral, positive
    model_order = ["positive", "negative", "neutral"]
    rows, has = soft_target_rows(["a", "b"], targets, [LABELS.index(label) for label in model_order])
    assert rows == [[0.1, 0.7, 0.2], [0.0, 0.0, 0.0]]
    assert has == [True, False]


def test_mixed_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    has = torch.tensor([True, False])
    hard = torch.tensor(0.3)
    log_p = [2 - math.log(math.exp(2) + 2), -math.log(math.exp(2) + 2)]
    soft_ce = -(0.5 * log_p[0] + 0.5 * log_p[1])  # the second row has no target: not averaged in
    assert float(mixed_loss(hard, logits, soft, has, 0.25)) == pytest.approx(0.75 * 0.3 + 0.25 * soft_ce)
    assert float(mixed_loss(hard, logits, soft, has, 0.0)) == pytest.approx(0.3)
    assert float(mixed_loss(hard, logits, soft, torch.tensor([False, False]), 0.5)) == pytest.approx(0.3)


def test_summary_counts_agreement_with_labels():
    examples = [Example("x", "positive"), Example("y", "negative"), Example("z", "neutral")]
    summary = targets_summary({"x": [0.1, 0.2, 0.7], "y": [0.2, 0.7, 0.1]}, examples)
    assert summary == {"rows": 2, "teacher_accuracy_out_of_fold": 0.5}
