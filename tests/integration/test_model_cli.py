"""`finsent model …` end to end against the real Elasticsearch (mirror) and Kafka (control)."""

import csv
import json

import numpy as np
import pytest
from scipy.special import softmax
from typer.testing import CliRunner

from finsent.schemas import LABELS
from tests.model_fixtures import tiny_rows
from tests.topic_reading import topic_held


@pytest.fixture
def cli_env(bootstrapped, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FINSENT_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("FINSENT_INDEX_PREFIX", bootstrapped.index_prefix)
    monkeypatch.setenv("FINSENT_TOPIC_PREFIX", bootstrapped.topic_prefix)
    monkeypatch.setenv("FINSENT_DEVICE", "cpu")
    return bootstrapped


def _run(*args):
    from finsent.cli import app

    result = CliRunner().invoke(app, ["model", *args])
    assert result.exit_code == 0, result.output
    return result


def test_train_predict_eval_list_promote_rollback(cli_env, tmp_path):
    from finsent import clients
    from finsent.schemas import ControlMessage

    data = tmp_path / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(tiny_rows(12))
        writer.writerow(["", "positive"])  # a bad row: skipped and counted
    common = ["--data", str(data), "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--threads", "1",
              "--no-progress", "--val-fraction", "0.25"]

    first = _run("train", *common).stdout.strip().splitlines()[-1]
    second = json.loads(_run("train", *common, "--json", "--promote", "--base-model", first).stdout)
    assert second["promoted"] is True and {"accuracy", "macro_f1", "n"} <= set(second["validation"])
    listed = json.loads(_run("list", "--json").stdout)
    assert [m["version"] for m in listed] == [first, second["version"]]
    assert listed[1]["champion"] is True and listed[1]["parent_version"] == first
    assert listed[0]["training"]["bad_rows"] == 1
    assert listed[0]["training"]["eval_max_length"] == 128  # validated as the workers score (FINSENT_MAX_LENGTH)
    table = _run("list").stdout  # 80 columns: the versions promote and rollback take are whole
    assert first in table and f"{second['version']}   champion" in table

    # predict: one line per input line, in order, errors in place
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "Profit rose"}\nnot json\n{"text": "  "}\n\n{"text": "Sales fell"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    _run("predict", "--model", "champion", "--input", str(inp), "--output", str(out), "--quantize", "none")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["line"] for line in lines] == [1, 2, 3, 4, 5]
    assert ["error" in line for line in lines] == [False, True, True, True, False]
    assert "not valid JSON" in lines[1]["error"] and f"{inp}:3" in lines[2]["error"]
    assert lines[0]["model_version"] == second["version"] and lines[0]["label"] in {"negative", "neutral", "positive"}
    assert lines[0]["score"] == pytest.approx(lines[0]["probabilities"]["positive"] - lines[0]["probabilities"]["negative"])

    # predict from CSV gives the same numbers for the same text
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("id,text\n1,Profit rose\n", encoding="utf-8")
    _run("predict", "--model", second["version"], "--input", str(csv_in), "--output", str(out), "--quantize", "none")
    assert json.loads(out.read_text().splitlines()[0])["probabilities"] == pytest.approx(lines[0]["probabilities"])

    # eval: the figures, also stored in the model's metadata
    report = json.loads(_run("eval", "--model", first, "--data", str(data), "--json").stdout)
    assert report["n"] == 24 and report["bad_rows"] == 1 and report["model_version"] == first
    assert sum(map(sum, report["confusion_matrix"]["rows_true_cols_pred"])) == 24
    assert json.loads(_run("list", "--json").stdout)[0]["metrics"]["eval"]
    other = tmp_path / "other.csv"  # a second labelled file: each source is judged on its own too
    other.write_text("text,label\nProfit rose sharply,positive\nSales fell,negative\n", encoding="utf-8")
    report = json.loads(_run("eval", "--model", first, "--data", str(data), "--data", str(other), "--json").stdout)
    assert report["n"] == 26 and set(report["by_source"]) == {tmp_path.name, "other"}
    assert report["by_source"]["other"]["n"] == 2 and sum(r["n"] for r in report["by_source"].values()) == 26

    # the int8-vs-fp32 measurement behind the quantisation default
    quant = json.loads(_run("quantization", "--model", first, "--data", str(data), "--no-validation-split",
                            "--json").stdout)
    assert quant["n"] == 24 and {"docs_per_s", "accuracy", "macro_f1"} <= set(quant["int8"]) <= set(quant["fp32"])
    assert isinstance(quant["int8_recommended"], bool)
    assert quant["fp32"]["agreement_with_fp32"] == 1.0
    assert quant["fp32"]["changed_by_batching"] == 0.0  # fp32 labels do not depend on the batch-mates
    assert all(0.0 <= quant[v]["changed_by_batching"] <= 1.0 for v in ("int8", "onnx-int8"))
    for variant in ("int8", "onnx-int8"):  # a variant can lose no more accuracy than it changes labels
        r = quant[variant]
        assert abs(quant["fp32"]["accuracy"] - r["accuracy"]) <= 1 - r["agreement_with_fp32"] + 1e-9

    # promote / rollback, announced on the control topic and mirrored to finsent-models
    _run("promote", first)
    assert _run("rollback").stdout.strip().endswith(second["version"])
    # train --promote, promote and rollback returned once the broker had their message
    messages = [ControlMessage.model_validate_json(m.value) for m in topic_held(cli_env, "control")]
    assert [(m.action, m.model_version) for m in messages] == [("promote", second["version"]), ("promote", first),
                                                               ("rollback", second["version"])]
    # the numbers of the moves (train --promote made move 1), so workers can drop one the broker writes late
    assert [m.sequence for m in messages] == [1, 2, 3] and len({m.registry_id for m in messages}) == 1
    with clients.elasticsearch(cli_env) as es:
        es.indices.refresh(index=cli_env.index("models"))
        docs = {h["_id"]: h["_source"] for h in es.search(index=cli_env.index("models"), size=10)["hits"]["hits"]}
    assert set(docs) == {first, second["version"]}
    assert docs[second["version"]]["champion"] is True and docs[first]["champion"] is False
    assert docs[first]["status"] == "rolled_back" and docs[second["version"]]["parent_version"] == first

    # prune: the rolled-back version goes, from the registry folder and from finsent-models
    assert json.loads(_run("prune", "--keep", "1", "--dry-run", "--json").stdout) == [first]
    assert json.loads(_run("prune", "--keep", "1", "--json").stdout) == [first]
    assert [m["version"] for m in json.loads(_run("list", "--json").stdout)] == [second["version"]]
    with clients.elasticsearch(cli_env) as es:
        es.indices.refresh(index=cli_env.index("models"))
        ids = {h["_id"] for h in es.search(index=cli_env.index("models"), size=10)["hits"]["hits"]}
    assert ids == {second["version"]}


def test_cli_errors_are_clear(cli_env, tmp_path):
    from finsent.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["model", "promote", "v20000101-000000-0000", "--no-notify"])
    assert result.exit_code == 1 and "no model version" in result.output
    result = runner.invoke(app, ["model", "train", "--data", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "no data file" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nok,positive\nnope,maybe\n", encoding="utf-8")
    result = runner.invoke(app, ["model", "train", "--data", str(bad), "--on-bad-rows", "reject"])
    assert result.exit_code == 1 and f"{bad}:3: unknown label 'maybe'" in result.output
    result = runner.invoke(app, ["model", "train", "--data", str(bad), "--pooling", "max"])
    assert result.exit_code == 1 and "--pooling must be one of cls, mean, not 'max'" in result.output
    result = runner.invoke(app, ["model", "eval", "--model", "champion", "--data", str(bad)])
    assert result.exit_code == 1 and "no champion" in result.output
    result = runner.invoke(app, ["model", "calibrate", "--data", str(bad), "--bias", "maybe"])
    assert result.exit_code == 2 and "--bias must be auto, on or off, not 'maybe'" in result.output


def test_calibrate_registers_the_same_weights_with_a_fitted_temperature(cli_env, tmp_path):
    from finsent import clients, topology

    with clients.elasticsearch(cli_env) as es:  # a models index from before `requires`: its mapping is strict
        es.indices.delete(index=cli_env.index("models"))
        older = {k: v for k, v in topology.MAPPINGS["models"].items() if k != "requires"}
        es.indices.create(index=cli_env.index("models"), mappings={"dynamic": "strict", "properties": older})
    data = tmp_path / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["text", "label"], *tiny_rows(12)])
    first = _run("train", "--data", str(data), "--max-steps", "2", "--batch-size", "8", "--threads", "1",
                 "--no-progress", "--val-fraction", "0.25").stdout.strip().splitlines()[-1]
    held_rows = [row for row in tiny_rows(18) if row not in set(tiny_rows(12))]  # not trained on
    held = tmp_path / "held.csv"
    with held.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["text", "label"], *held_rows])

    out = json.loads(_run("calibrate", "--model", first, "--data", str(held), "--bias", "off", "--promote",
                          "--json").stdout)
    calibration, version = out["calibration"], out["version"]
    assert version != first and out["promoted"] is True and calibration["n"] == len(held_rows)
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9  # T = 1 was a candidate of the fit
    assert 0.0 <= calibration["ece_after"] <= 1.0
    listed = {m["version"]: m for m in json.loads(_run("list", "--json").stdout)}
    assert listed[version]["parent_version"] == first and listed[version]["champion"] is True
    assert listed[version]["calibration"]["temperature"] == calibration["temperature"]
    for key in ("training", "data_fingerprint", "base_model"):  # what the weights are, inherited
        assert listed[version][key] == listed[first][key], key
    # The figures are not: the temperature moves the confidences, so they are measured again on the given rows.
    measured = listed[version]["metrics"]["validation"]
    assert measured["data"] == [str(held)] and measured["n"] == len(held_rows)
    assert measured["ece"] == pytest.approx(calibration["ece_after"], abs=1e-5)

    with clients.elasticsearch(cli_env) as es:  # the mirror shows each version's temperature and requirements
        es.indices.refresh(index=cli_env.index("models"))
        docs = {h["_id"]: h["_source"] for h in es.search(index=cli_env.index("models"), size=10)["hits"]["hits"]}
    assert docs[version]["temperature"] == pytest.approx(calibration["temperature"])
    assert docs[first]["temperature"] == pytest.approx(listed[first]["calibration"]["temperature"])
    assert [docs[v]["requires"] for v in (first, version)] == [listed[v]["requires"] for v in (first, version)]

    # Same weights, new temperature: the labels stay, the confidences move.
    from model.registry import Registry
    from model.scorer import Scorer

    registry = Registry(tmp_path / "models")
    before, after = (Scorer.load(v, registry=registry, device="cpu") for v in (first, "champion"))
    assert after.temperature == calibration["temperature"] != before.temperature
    texts = [text for text, _ in held_rows]
    old, new = before.score(texts), after.score(texts)
    assert [s.label for s in new] == [s.label for s in old]
    assert [s.confidence for s in new] != pytest.approx([s.confidence for s in old], abs=1e-6)
    assert out["calibration"]["bias"] is None and after.bias == [0.0, 0.0, 0.0]

    # With biases forced on: saved in the config, and the scorer adds them after the division.
    on = json.loads(_run("calibrate", "--model", first, "--data", str(held), "--bias", "on", "--json").stdout)
    biased = Scorer.load(on["version"], registry=registry, device="cpu")
    bias = on["calibration"]["bias"]
    assert biased.bias == [bias[label] for label in LABELS] and bias["neutral"] == 0.0
    assert on["calibration"]["bias_check"]["kept"] is True and on["calibration"]["bias_check"]["mode"] == "on"
    before.temperature, before.bias = 1.0, [0.0, 0.0, 0.0]
    raw = np.log(np.array(before.predict_proba(texts)))
    want = softmax(raw / biased.temperature + np.array(biased.bias), axis=1)
    np.testing.assert_allclose(biased.predict_proba(texts), want, atol=1e-5)
    # Labels can change, so its validation figures are measured again, on the calibration rows.
    measured = registry.get(on["version"])["metrics"]["validation"]
    assert measured["data"] == [str(held)] and measured["n"] == len(held_rows)
    right = sum(s.label == label for s, (_, label) in zip(biased.score(texts), held_rows))
    assert measured["accuracy"] == pytest.approx(right / len(held_rows))


def test_promote_builds_the_onnx_export_first_when_workers_score_in_onnx_int8(cli_env, tmp_path, monkeypatch):
    from model.onnx_runtime import cache_file

    data = tmp_path / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["text", "label"], *tiny_rows(8)])
    common = ["--data", str(data), "--max-steps", "1", "--batch-size", "8", "--threads", "1", "--no-progress",
              "--val-fraction", "0.25"]
    exportable = _run("train", *common).stdout.strip().splitlines()[-1]
    broken = _run("train", *common).stdout.strip().splitlines()[-1]
    versions = tmp_path / "models" / "versions"
    monkeypatch.setenv("FINSENT_MODEL_QUANTIZE", "onnx-int8")

    # Before the pointer moves and before the workers are told, so none of them has to export it beside itself.
    assert not cache_file(versions / exportable).exists()
    assert "building the ONNX export" in _run("promote", exportable, "--no-notify").stdout
    assert cache_file(versions / exportable).is_file()

    # A model that cannot be exported is not promoted: the workers could not load it either.
    (versions / broken / "model.safetensors").unlink()
    from finsent.cli import app

    result = CliRunner().invoke(app, ["model", "promote", broken, "--no-notify"])
    assert result.exit_code != 0 and f"{broken} not promoted: its ONNX export failed" in result.output
    champion = json.loads((tmp_path / "models" / "champion.json").read_text())["champion"]
    assert champion == exportable
