"""`finsent model calibrate`'s new version (model.calibrated) on a real, tiny model: two training steps of the
packaged MiniLM on the sentences below, as tests.model_fixtures builds one (which needs ../shared/data)."""

from __future__ import annotations

import pytest

from model.data import Example

# Sentences written for this test (no labelled data set copied); six of each label.
ROWS = [
    ("The lender cut its dividend after a loss", "negative"), ("Orders fell for the third quarter", "negative"),
    ("The regulator fined the bank heavily", "negative"), ("Shares sank on a profit warning", "negative"),
    ("The miner shut two pits and laid off staff", "negative"), ("Margins shrank as costs climbed", "negative"),
    ("The board meets on Thursday", "neutral"), ("The company moved its head office", "neutral"),
    ("The report is due next month", "neutral"), ("A new auditor was appointed", "neutral"),
    ("The shares trade on two exchanges", "neutral"), ("The fund publishes holdings quarterly", "neutral"),
    ("Profit doubled on strong demand", "positive"), ("The retailer raised its outlook", "positive"),
    ("Shares jumped after record sales", "positive"), ("The airline won a large contract", "positive"),
    ("Analysts upgraded the stock to buy", "positive"), ("Revenue beat every estimate", "positive"),
]
EXAMPLES = [Example(text, label, "handmade") for text, label in ROWS]
DATA = ["handmade.csv"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    from model.registry import Registry
    from model.training import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("calibrated-registry")
    result = train(ROWS, registry=Registry(root), epochs=1, max_steps=2, batch_size=8, val_fraction=0.25,
                   progress=False, threads=1, seed=13)
    Registry(root).promote(result.version)
    return root


@pytest.fixture
def model_registry(trained, tmp_path):
    """A private copy of the trained registry, free to change."""
    import shutil

    from model.registry import Registry

    shutil.copytree(trained, tmp_path / "models")
    return Registry(tmp_path / "models")


def _scorer(registry, ref):
    from model.scorer import Scorer

    return Scorer.load(ref, registry=registry, device="cpu", threads=1)


def test_dropping_the_biases_measures_the_validation_figures_again(model_registry) -> None:
    from model.calibrated import register_calibrated
    from model.evaluation import evaluate

    registry = model_registry
    biased, _ = register_calibrated(registry, _scorer(registry, "champion"), registry.path("champion"), EXAMPLES,
                                    DATA, bias="on")
    # Figures no measurement gives, so an inherited one shows; an eval of the parent's stays the parent's.
    stale = {"accuracy": 0.123, "macro_f1": 0.123, "ece": 0.5, "n": 1}
    registry.update_metadata(biased, metrics={"validation": stale, "eval": {"some.csv": stale}})
    parent = _scorer(registry, biased)
    assert any(parent.bias)

    version, calibration = register_calibrated(registry, parent, registry.path(biased), EXAMPLES, DATA, bias="off")
    assert calibration["bias"] is None
    meta = registry.get(version)
    assert meta["parent_version"] == biased and meta["training"] == registry.get(biased)["training"]
    assert set(meta["metrics"]) == {"validation"}
    validation = meta["metrics"]["validation"]
    scorer = _scorer(registry, version)
    assert scorer.bias == [0.0, 0.0, 0.0] and scorer.temperature == calibration["temperature"]
    again = evaluate(scorer, [e.text for e in EXAMPLES], [e.label for e in EXAMPLES], [e.source for e in EXAMPLES])
    assert validation["data"] == DATA and validation["n"] == len(EXAMPLES)
    for key in ("accuracy", "macro_f1", "ece"):
        assert validation[key] == pytest.approx(again[key], abs=1e-9), key
    assert validation["confusion_matrix"] == again["confusion_matrix"]


def test_a_temperature_alone_measures_the_confidences_again(model_registry) -> None:
    from model.calibrated import register_calibrated

    registry = model_registry
    champion = registry.champion()
    version, calibration = register_calibrated(registry, _scorer(registry, champion), registry.path(champion),
                                               EXAMPLES, DATA, bias="off")
    validation = registry.get(version)["metrics"]["validation"]
    # The fit's own figures after calibration are the scorer's on these rows (each text is one window).
    assert validation["ece"] == pytest.approx(calibration["ece_after"], abs=1e-5)
    assert validation["accuracy"] == pytest.approx(calibration["accuracy_after"])


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_calibrate_promote_whose_workers_kafka_cannot_reach_exits_4_after_its_output(model_registry, tmp_path,
                                                                                       monkeypatch, as_json) -> None:
    # The new version is the champion but the workers were not told: it exited 0, as a full success.
    import csv
    import json

    from typer.testing import CliRunner

    from finsent.cli import app

    def away(settings, message):  # Kafka stands aside here; a closed port costs 30 s of bootstrap tries
        raise ConnectionError("Kafka away")

    monkeypatch.setattr("stream.control.publish", away)
    data = tmp_path / "handmade.csv"
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *ROWS])
    env = {"FINSENT_MODEL_DIR": str(model_registry.root), "FINSENT_STATE_DIR": str(tmp_path / "state"),
           "FINSENT_ELASTICSEARCH_URL": "http://127.0.0.1:9", "FINSENT_MODEL_THREADS": "1"}
    before = model_registry.champion()
    result = CliRunner().invoke(app, ["model", "calibrate", "--data", str(data), "--bias", "off", "--promote",
                                      *(["--json"] if as_json else [])], env=env)
    assert result.exit_code == 4, result.output
    champion = model_registry.champion()
    assert champion != before  # the move stands
    said = json.loads(result.stdout)["version"] if as_json else result.stdout.splitlines()[-1]
    assert said == champion  # the output is all there before the exit
    assert f"`finsent model promote {champion}` tells them" in result.stderr
