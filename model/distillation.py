"""Cross-fitted self-distillation: out-of-fold soft labels from k teachers, then one student.

Both training sources carry label noise (annotators disagree on many analyst sentences and
tweets), and averaging several models helped on validation where one model did not
(README). This folds that gain into one model of the same size, so serving costs nothing more:

1. split off the validation rows exactly as :func:`model.training.train` will (same seed);
2. cut the remaining training rows into ``k`` stratified folds; for each fold, train a
   teacher on the other folds and predict the fold it never saw (out-of-fold probabilities:
   a teacher's predictions on its own training rows would be near one-hot and teach nothing);
3. train the student on all the training rows with a loss that mixes the hard labels with
   those probabilities (:func:`mixed_loss`).

The validation rows stay outside every teacher and the student, so their figures compare
with the champion's on the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from model.data import Example, stratified_split

log = logging.getLogger(__name__)

# A teacher: trained on some examples, it returns probabilities (LABELS order) for other texts.
TrainTeacher = Callable[[list[Example], int], Callable[[list[str]], list[list[float]]]]


def stratified_folds(examples: Sequence[Example], k: int, seed: int) -> list[int]:
    """Fold number (0..k-1) of each example, stratified by source and label."""
    from sklearn.model_selection import StratifiedKFold

    if k < 2:
        raise ValueError(f"distillation needs at least 2 folds, not {k}")
    keys = [f"{e.source}|{e.label}" for e in examples]
    folds = [0] * len(examples)
    # Strata smaller than k cannot be stratified; StratifiedKFold warns and spreads them as it can.
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(keys, keys)):
        for i in held_out:
            folds[i] = fold
    return folds


def out_of_fold_targets(examples: Sequence[Example], *, k: int, seed: int, val_fraction: float,
                        train_teacher: TrainTeacher) -> dict[str, list[float]]:
    """Soft targets (text → probabilities in LABELS order) for every training row, each from the
    teacher that did not train on it. Validation rows get none and reach no teacher."""
    train_rows, _ = stratified_split(examples, val_fraction, seed)
    folds = stratified_folds(train_rows, k, seed)
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for fold in range(k):
        taught = [e for e, f in zip(train_rows, folds) if f != fold]
        held = [e for e, f in zip(train_rows, folds) if f == fold]
        log.info("teacher %d/%d: %d rows, predicts %d", fold + 1, k, len(taught), len(held))
        predict = train_teacher(taught, fold)
        for example, probs in zip(held, predict([e.text for e in held]), strict=True):
            # A text repeated across folds gets the mean of its teachers' probabilities.
            total = sums.setdefault(example.text, [0.0] * len(probs))
            sums[example.text] = [a + b for a, b in zip(total, probs)]
            counts[example.text] = counts.get(example.text, 0) + 1
    return {text: [p / counts[text] for p in total] for text, total in sums.items()}


def soft_target_rows(texts: Sequence[str], targets: Mapping[str, Sequence[float]],
                     columns: Sequence[int]) -> tuple[list[list[float]], list[bool]]:
    """Per training row: the soft target in the model's label order (``columns[i]`` is the LABELS
    index of the model's i-th output) and whether it has one."""
    rows, has = [], []
    for text in texts:
        target = targets.get(text)
        has.append(target is not None)
        rows.append([target[c] for c in columns] if target is not None else [0.0] * len(columns))
    return rows, has


def mixed_loss(hard_loss: Any, logits: Any, soft: Any, has_soft: Any, weight: float) -> Any:
    """``(1 - weight) · hard loss + weight · cross-entropy against the soft targets``, the soft
    part averaged over the rows that have a target (rows without one keep the hard loss only)."""
    import torch

    if weight == 0.0 or not bool(has_soft.any()):
        return hard_loss
    soft_ce = -(soft * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
    soft_mean = (soft_ce * has_soft).sum() / has_soft.sum()
    return (1.0 - weight) * hard_loss + weight * soft_mean


def targets_summary(targets: Mapping[str, Sequence[float]], examples: Sequence[Example]) -> dict[str, Any]:
    """How far the teachers agree with the labels they never saw (for the model's metadata)."""
    from finsent.schemas import LABELS

    scored = [(targets[e.text], e.label) for e in examples if e.text in targets]
    agree = sum(1 for probs, label in scored if LABELS[max(range(len(probs)), key=probs.__getitem__)] == label)
    return {"rows": len(scored), "teacher_accuracy_out_of_fold": round(agree / len(scored), 4) if scored else None}
