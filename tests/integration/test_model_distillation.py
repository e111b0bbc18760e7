"""A tiny cross-fitted distillation run: teachers stay out of the registry, the student is a
normal registered model that says how it was taught."""

import os

from tests.model_fixtures import tiny_bert, tiny_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_distilled_student_is_registered_with_its_teachers_summary(tmp_path):
    import torch

    from model.data import Example, stratified_split
    from model.registry import Registry
    from model.scorer import Scorer
    from model.training import train_distilled

    torch.set_num_threads(1)
    base = tiny_bert(tmp_path / "base", {0: "negative", 1: "neutral", 2: "positive"}, favourite=1)
    registry = Registry(tmp_path / "models")
    rows = tiny_rows(24)
    result = train_distilled([*rows, ("Shares rose", "maybe")], registry=registry, folds=2, teacher_epochs=1, soft_weight=0.5, base_model=base,
                             epochs=1, batch_size=8, val_fraction=0.25, progress=False, threads=1, seed=13)

    assert [m["version"] for m in registry.list()] == [result.version]  # the teachers were not registered
    meta = registry.get(result.version)
    distillation = meta["training"]["distillation"]
    train_rows, val_rows = stratified_split([Example(t, label, "rows") for t, label in rows], 0.25, 13)
    # Every training row got an out-of-fold target; the validation rows are the plain recipe's.
    assert distillation["folds"] == 2 and distillation["rows"] == len(train_rows) == meta["training"]["train_size"]
    assert meta["training"]["val_size"] == len(val_rows) == result.metrics["n"]
    assert 0.0 <= distillation["teacher_accuracy_out_of_fold"] <= 1.0
    assert meta["training"]["bad_rows"] == 1  # counted once, before the teachers
    sentiments = Scorer.load(registry.path(result.version)).score(["Profit rose", "Sales fell"])
    assert [s.label in {"negative", "neutral", "positive"} for s in sentiments] == [True, True]
