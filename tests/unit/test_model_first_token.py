"""The last block cut to the first token gives the full model's logits, and only where it applies."""

import pytest

torch = pytest.importorskip("torch")


def _tiny(family: str, attention: str):
    from transformers import (AutoModelForSequenceClassification, BertConfig, DistilBertConfig,
                              RobertaConfig)

    configs = {"bert": BertConfig, "roberta": RobertaConfig, "distilbert": DistilBertConfig}
    sizes = (dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37) if family == "distilbert" else
             dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37))
    torch.manual_seed(0)
    config = configs[family](vocab_size=99, num_labels=3, **sizes)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attention).eval()


def _batch():
    # Three texts of different lengths: padding, and a mask the cut block must honour.
    ids = torch.randint(5, 99, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_cut_model_gives_the_full_models_logits(family, attention):
    from model.first_token import first_token_only

    model, batch = _tiny(family, attention), _batch()
    with torch.inference_mode():
        full = model(**batch).logits
        cut = first_token_only(model)
        assert type(cut.base_model.encoder.layer[-1]).__name__ == "FirstTokenBlock"
        assert not cut.base_model.encoder.layer[-1].training  # cut after eval(): no dropout sneaks in
        assert torch.allclose(cut(**batch).logits, full, atol=1e-5)
        assert torch.allclose(cut(**{k: v[1:2, :7] for k, v in batch.items()}).logits, full[1:2], atol=1e-5)
        # The mask is honoured: changing a padded token changes nothing, a real one changes the logits.
        changed = batch["input_ids"].clone()
        changed[2, 5] = 42
        assert torch.allclose(cut(input_ids=changed, attention_mask=batch["attention_mask"]).logits[2], full[2], atol=1e-5)
        changed[2, 1] = 43 if changed[2, 1] != 43 else 44
        assert not torch.allclose(cut(input_ids=changed, attention_mask=batch["attention_mask"]).logits[2], full[2], atol=1e-5)


def test_applied_once_only():
    from model.first_token import first_token_only

    model = first_token_only(first_token_only(_tiny("bert", "sdpa")))
    block = model.base_model.encoder.layer[-1]
    assert type(block).__name__ == "FirstTokenBlock"
    assert type(block.attention).__name__ == "BertAttention"  # not a cut block wrapped again
    assert [type(b).__name__ for b in model.base_model.encoder.layer[:-1]] == ["BertLayer", "BertLayer"]


def test_models_it_does_not_know_are_left_as_they_are():
    from model.first_token import applies, first_token_only
    from model.pooling import with_pooling

    distil = _tiny("distilbert", "sdpa")
    assert not applies(distil) and first_token_only(distil) is distil
    mean = with_pooling(_tiny("bert", "sdpa"), "mean")  # mean pooling reads every position
    assert not applies(mean)
    assert type(first_token_only(mean).hf.base_model.encoder.layer[-1]).__name__ == "BertLayer"


def test_training_through_the_cut_model_gets_the_full_models_gradients():
    import copy

    from model.first_token import first_token_only

    full = _tiny("bert", "sdpa")
    for module in full.modules():  # dropout off: the two models must see the same function
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    full.config.attention_probs_dropout_prob = 0.0
    cut = first_token_only(copy.deepcopy(full))
    batch, labels = _batch(), torch.tensor([0, 2, 1])
    for model in (full, cut):
        model.train()
        torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
    grads = dict(cut.named_parameters())
    for name, param in full.named_parameters():
        assert name in grads  # same parameter names: the saved weights load into the stock model
        assert torch.allclose(param.grad, grads[name].grad, atol=1e-6), name


def test_a_cut_model_cannot_be_given_a_mean_pooling_head():
    from model.first_token import first_token_only, is_cut
    from model.pooling import with_pooling

    cut = first_token_only(_tiny("bert", "sdpa"))
    assert is_cut(cut) and not is_cut(_tiny("bert", "sdpa")) and not is_cut(_tiny("distilbert", "sdpa"))
    with pytest.raises(ValueError, match="cut to the first token"):
        with_pooling(cut, "mean")
