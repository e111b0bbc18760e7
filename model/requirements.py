"""What a model needs of the code that scores it: the options a release without them would score wrongly, silently.

A scorer that does not know mean pooling reads such a model's [CLS] vector instead; one that does not know
per-label biases leaves them out and changes labels; one without temperatures reports other scores and
confidences. Each version's metadata lists the options its model uses (``requires``, written by
:meth:`model.registry.Registry.register` from the saved config, so that no caller can forget it), and every loader
(:func:`check_folder`, :func:`check`) refuses a model that requires a feature it does not know, naming it, instead
of scoring it wrongly. A model without the list (registered before it existed) loads as before. A release that adds
such an option adds its name to :data:`KNOWN` and to :func:`required_by`, and a rollback to this release or a later
one refuses the models that use it. (Releases before this one cannot be changed: they read no ``requires``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.calibration import BIAS_KEY, CONFIG_KEY as TEMPERATURE_KEY
from model.pooling import CONFIG_KEY as POOLING_KEY

FIELD = "requires"
# Every feature this code scores correctly. "pooling:<p>" for a pooling other than transformers' own [CLS].
KNOWN = frozenset({"pooling:mean", "label_biases", "temperature"})


class UnscorableModel(ValueError):
    """A model that requires a feature this code does not know (or whose ``requires`` is not a list of names)."""


def required_by(config: dict[str, Any]) -> list[str]:
    """The features a scorer must know to score the model whose ``config.json`` is ``config``."""
    needs = []
    pooling = config.get(POOLING_KEY)
    if pooling not in (None, "cls"):
        needs.append(f"pooling:{pooling}")
    if any(value for value in (config.get(BIAS_KEY) or {}).values()):
        needs.append("label_biases")
    if config.get(TEMPERATURE_KEY) not in (None, 1, 1.0):
        needs.append("temperature")
    return needs


def unknown(meta: dict[str, Any]) -> list[str]:
    """The features ``meta`` (a version's metadata) requires that this code does not know; [] without the field.
    UnscorableModel when the field is not a list of names."""
    needs = meta.get(FIELD, [])
    if not isinstance(needs, list) or not all(isinstance(need, str) for need in needs):
        raise UnscorableModel(f"model {meta.get('version', '?')}: its metadata's {FIELD!r} is not a list of feature "
                              f"names: {needs!r}")
    return [need for need in needs if need not in KNOWN]


def check(meta: dict[str, Any]) -> None:
    """UnscorableModel naming what is missing when this code cannot score the model ``meta`` describes."""
    if missing := unknown(meta):
        raise UnscorableModel(
            f"model {meta.get('version', '?')} requires {', '.join(missing)}, which this release does not know, so it "
            f"would score it wrongly: promote a version this release can score (`finsent model list`), or run a "
            f"release that knows {'it' if len(missing) == 1 else 'them'}")


def check_folder(folder: Path) -> None:
    """:func:`check` of a model folder's metadata.json. A folder without one (an HF model, a copy), or with one that
    cannot be read (the scorer names the model after its folder then), has no list to check."""
    try:
        meta = json.loads((Path(folder) / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return
    if isinstance(meta, dict):
        check(meta)
