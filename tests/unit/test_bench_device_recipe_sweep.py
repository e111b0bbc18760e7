"""The recipe sweep's bookkeeping: the order runs start in and the paired summary."""

from __future__ import annotations

import pytest

from bench.device.recipe_sweep import RECIPES, figures, plan, render, summarize


def run(recipe: str, seed: int, accuracy: float, fpb: float) -> dict:
    return {"recipe": recipe, "seed": seed, "figures": {"accuracy": accuracy, "fpb.accuracy": fpb}}


def test_plan_starts_every_recipe_of_a_seed_before_the_next_seed():
    assert plan(["plain", "lr5e-5"], [13, 29]) == [("plain", 13), ("lr5e-5", 13), ("plain", 29), ("lr5e-5", 29)]


def test_every_recipe_is_the_plain_one_plus_options():
    assert RECIPES["plain"] == []
    assert all(len(options) % 2 == 0 and all(o.startswith("--") for o in options[::2]) for options in RECIPES.values())


def test_figures_flatten_overall_and_each_source():
    validation = {"accuracy": 0.85, "macro_f1": 0.8, "n": 10,
                  "by_source": {"fpb": {"accuracy": 0.84, "macro_f1": 0.81, "n": 4}}}
    assert figures(validation) == {"accuracy": 0.85, "macro_f1": 0.8, "fpb.accuracy": 0.84, "fpb.macro_f1": 0.81}


def test_summary_pairs_by_seed_and_skips_unpaired_and_failed_runs():
    runs = [run("lr5e-5", 13, 0.86, 0.85), run("plain", 13, 0.85, 0.84), run("plain", 29, 0.84, 0.82),
            run("lr5e-5", 29, 0.83, 0.83), run("lr5e-5", 41, 0.99, 0.99),  # no plain run at 41: not paired
            {"recipe": "plain", "seed": 41, "error": "stopped"}]
    summary = summarize(runs)
    assert list(summary) == ["plain", "lr5e-5"]  # the reference first
    assert summary["plain"]["seeds"] == [13, 29] and "vs_plain" not in summary["plain"]
    entry = summary["lr5e-5"]
    assert entry["seeds"] == [13, 29, 41] and entry["paired_seeds"] == [13, 29]
    assert entry["mean"]["accuracy"] == pytest.approx((0.86 + 0.83 + 0.99) / 3)
    assert entry["vs_plain"]["accuracy"] == pytest.approx(0.0)  # +0.01 at 13, -0.01 at 29
    assert entry["vs_plain"]["fpb.accuracy"] == pytest.approx(0.01)
    assert entry["wins_accuracy"] == 1
    text = render(summary)
    assert "paired over 2 seed(s)" in text and "fpb.accuracy +1.00" in text


def test_the_default_sweep_asks_the_open_question_with_whole_pairs():
    from bench.device.recipe_sweep import DEFAULT_RECIPES, DEFAULT_SEEDS, REFERENCE

    assert DEFAULT_RECIPES[0] == REFERENCE and set(DEFAULT_RECIPES) <= set(RECIPES)
    assert RECIPES["mean"] == ["--pooling", "mean"] and len(set(DEFAULT_SEEDS)) == len(DEFAULT_SEEDS) >= 7
