import pytest

from model import quantization
from model.quantization import decide, resolve_quantize


def test_int8_is_chosen_only_when_faster_and_within_half_a_point():
    fp32 = {"docs_per_s": 100.0, "accuracy": 0.870}
    assert decide(fp32, {"docs_per_s": 150.0, "accuracy": 0.866}) is True
    assert decide(fp32, {"docs_per_s": 150.0, "accuracy": 0.864}) is False  # 0.6 points lost
    assert decide(fp32, {"docs_per_s": 90.0, "accuracy": 0.870}) is False  # slower


def test_the_budget_holds_for_each_source_too():
    fp32 = {"docs_per_s": 100.0, "accuracy": 0.870, "by_source": {"fpb": 0.865, "tweets": 0.872}}
    even = {"docs_per_s": 150.0, "accuracy": 0.867, "by_source": {"fpb": 0.862, "tweets": 0.869}}
    lopsided = {"docs_per_s": 150.0, "accuracy": 0.867, "by_source": {"fpb": 0.855, "tweets": 0.872}}
    assert decide(fp32, even) is True
    assert decide(fp32, lopsided) is False  # a point lost on fpb, hidden in the average


def test_resolve_quantize():
    assert resolve_quantize("none") is None and resolve_quantize(None) is None
    assert resolve_quantize("int8") == "int8" and resolve_quantize("onnx-int8") == "onnx-int8"
    assert resolve_quantize("bf16") == "bf16"
    with pytest.raises(ValueError, match="auto, none, int8, onnx-int8, bf16"):
        resolve_quantize("fp16")


@pytest.mark.parametrize("amx, avx512_bf16, expected",
                         [(True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, None)])
def test_auto_means_bf16_only_where_the_cpu_multiplies_bf16_in_hardware(monkeypatch, amx, avx512_bf16, expected):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert quantization.native_bf16() is (expected == "bf16")
    assert resolve_quantize("auto") == expected


def test_the_fastest_variant_within_the_budget_is_recommended():
    result = {"fp32": {"docs_per_s": 100.0, "accuracy": 0.870},
              "int8": {"docs_per_s": 130.0, "accuracy": 0.866},
              "onnx-int8": {"docs_per_s": 160.0, "accuracy": 0.866}}
    assert quantization.recommended(result) == "onnx-int8"
    result["onnx-int8"]["accuracy"] = 0.860  # a point lost: out, however fast
    assert quantization.recommended(result) == "int8"
    result["int8"]["docs_per_s"] = 95.0
    assert quantization.recommended(result) == "fp32"


def test_a_recommended_variant_with_batch_dependent_labels_comes_with_a_caveat():
    result = {"recommended": "onnx-int8", "fp32": {"changed_by_batching": 0.0},
              "onnx-int8": {"changed_by_batching": 0.006}}
    caveat = quantization.batching_caveat(result)
    assert caveat is not None and caveat.startswith("onnx-int8 gave 0.60% of these texts another label")
    result["onnx-int8"]["changed_by_batching"] = 0.0
    assert quantization.batching_caveat(result) is None
    assert quantization.batching_caveat({"recommended": "fp32", "fp32": {"changed_by_batching": 0.0}}) is None


def test_changed_by_batching_counts_labels_that_depend_on_the_batch_mates():
    from types import SimpleNamespace

    class LoudNeighbour:  # a stand-in scorer: one text sways the whole batch, as one scale per batch can
        batch_size = 2

        def score(self, texts):
            label = "positive" if "loud" in texts else "neutral"
            return [SimpleNamespace(label=label) for _ in texts]

    texts = ["loud", "a", "b", "c"]
    together = [s.label for s in LoudNeighbour().score(texts)]
    assert quantization.changed_by_batching(LoudNeighbour(), texts, together) == 0.5  # the batch without it
    assert quantization.changed_by_batching(LoudNeighbour(), texts[1:], ["neutral"] * 3) == 0.0
