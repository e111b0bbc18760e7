"""``finsent model calibrate``'s new version: the same weights with a fitted temperature (and biases) in their
config, registered with validation figures measured as it now scores.

The figures are measured again whatever was fitted: biases change labels, and the temperature alone changes
the confidences, so the parent's ECE (and, with biases, its accuracy and macro-F1) would describe another
model. ``finsent model list`` shows them and the performance drift monitor takes them as its baseline.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finsent.schemas import LABELS
from model.calibration import BIAS_KEY, CONFIG_KEY, BiasMode, calibrate

# The registry's own fields, and what is measured anew; everything else describes the weights and is inherited.
NOT_INHERITED = {"version", "created_at", "status", "promoted_at", "champion", "parent_version", "calibration",
                 "metrics", "requires"}  # requires: the registry derives it from the new config (model.requirements)


def register_calibrated(registry: Any, scorer: Any, source: Path, examples: Sequence[Any], data: Sequence[str], *,
                        bias: BiasMode = "auto") -> tuple[str, dict[str, Any]]:
    """Fit ``scorer``'s model (loaded from ``source``) to ``examples`` (``model.data.Example``, from the files
    ``data``) and register the calibrated copy; returns its version and the calibration."""
    from model import data as datamod

    texts, labels = [e.text for e in examples], [e.label for e in examples]
    scorer.temperature, scorer.bias = 1.0, [0.0] * len(LABELS)  # fitted to the model's own output
    calibration = calibrate(scorer.predict_proba(texts), labels, bias=bias) | {
        "data": list(data), "data_fingerprint": datamod.fingerprint(examples)}
    validation = measured(scorer, calibration, examples) | {"data": list(data)}
    parent = registry.get(scorer.version) if registry.exists(scorer.version) else {}
    metadata = {k: v for k, v in parent.items() if k not in NOT_INHERITED} | {
        "metrics": {"validation": validation}, "parent_version": scorer.version, "calibration": calibration}
    return _register_copy(registry, source, calibration, metadata), calibration


def measured(scorer: Any, calibration: dict[str, Any], examples: Sequence[Any]) -> dict[str, Any]:
    """``model.evaluation.evaluate`` of the scorer as the calibrated version will score (the scorer's own pass,
    not the fit's shortcut: a long text's windows are calibrated one by one before they are averaged)."""
    from model.evaluation import evaluate

    scorer.temperature = calibration["temperature"]
    scorer.bias = [(calibration["bias"] or {}).get(label, 0.0) for label in LABELS]
    return evaluate(scorer, [e.text for e in examples], [e.label for e in examples], [e.source for e in examples])


def _register_copy(registry: Any, source: Path, calibration: dict[str, Any], metadata: dict[str, Any]) -> str:
    with tempfile.TemporaryDirectory(prefix="finsent-calibrate-") as tmp:
        # The same files (an ONNX export stays valid: calibration is applied outside the graph).
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        config_file = Path(tmp) / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config |= {CONFIG_KEY: calibration["temperature"], BIAS_KEY: calibration["bias"]}
        config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return registry.register(tmp, metadata)
