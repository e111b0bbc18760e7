"""The base that travels to a device machine in fp16 comes back as a loadable fp32 folder whose
weights are the packaged ones to fp16 rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.device.half_base import KEEP, WEIGHTS, convert, main
from model.base_models import DEFAULT_BASE, resolve_base


def test_half_then_full_keeps_the_weights_to_fp16_rounding(tmp_path):
    packaged = Path(resolve_base(DEFAULT_BASE))
    main([str(tmp_path / "half")])
    convert(tmp_path / "half", tmp_path / "full", "fp32")

    original, half, full = (load_file(folder / WEIGHTS) for folder in (packaged, tmp_path / "half", tmp_path / "full"))
    assert set(half) == set(full) == set(original)
    assert (tmp_path / "half" / WEIGHTS).stat().st_size < 0.55 * (packaged / WEIGHTS).stat().st_size
    for name, weight in original.items():
        assert half[name].dtype == (torch.float16 if weight.is_floating_point() else weight.dtype), name
        assert full[name].dtype == weight.dtype, name
        assert torch.allclose(full[name], weight, rtol=2**-10, atol=1e-7), name
    assert [n for n in KEEP if (packaged / n).is_file()] == [n for n in KEEP if (tmp_path / "full" / n).is_file()]
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "full"), num_labels=3)
    assert next(loaded.base_model.parameters()).dtype == torch.float32  # what training starts from


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        convert(tmp_path / "empty", tmp_path / "out", "fp32")
