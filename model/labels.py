"""Label names: the three labels of finsent, and normalisation of the many ways data sets and
model configs spell them ("Positive", "bullish", "LABEL_2", ...).

Pure functions, no I/O.
"""

from __future__ import annotations

import re

from finsent.schemas import LABELS

_SYNONYMS: dict[str, str] = {
    "negative": "negative", "neg": "negative", "bearish": "negative", "bear": "negative",
    "neutral": "neutral", "neu": "neutral", "none": "neutral",
    "positive": "positive", "pos": "positive", "bullish": "positive", "bull": "positive",
}
_GENERIC = re.compile(r"^label[_ -]?(\d+)$")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?$")


class LabelError(ValueError):
    """A label name that cannot be mapped to negative / neutral / positive."""


def normalise_label(name: object) -> str:
    """One of ``LABELS`` for a label as found in a data file.

    Numbers are refused: data sets number their classes differently (the finance-tweets set uses
    0=bearish, 1=bullish, 2=neutral; others -1/0/1 or 0=negative), so any reading of "0" would
    silently mislabel some file.
    """
    key = str(name).strip().lower()
    if key in _SYNONYMS:
        return _SYNONYMS[key]
    if _NUMBER.match(key):
        raise LabelError(f"numeric label {str(name)!r} is ambiguous (data sets number their classes differently): "
                         f"write one of {', '.join(LABELS)}")
    raise LabelError(f"unknown label {str(name)!r} (expected one of {', '.join(LABELS)} or a synonym)")


def model_label_order(id2label: dict[int | str, str]) -> list[str]:
    """Our label for each output index of a classifier, from its config's ``id2label``.

    Named labels are normalised; generic ``LABEL_i`` names follow the common convention of
    three-class sentiment heads (0 negative, 1 neutral, 2 positive). Raises LabelError when the
    head does not map one-to-one onto the three labels.
    """
    ids = sorted(int(i) for i in id2label)
    if ids != list(range(len(LABELS))):
        raise LabelError(f"a sentiment head needs exactly {len(LABELS)} outputs, config has ids {ids}")
    order = []
    for i in ids:
        name = str(id2label.get(i, id2label.get(str(i))))
        generic = _GENERIC.match(name.strip().lower())
        order.append(LABELS[int(generic.group(1))] if generic else normalise_label(name))
    if sorted(order) != sorted(LABELS):
        raise LabelError(f"id2label {id2label} does not map one-to-one onto {list(LABELS)}")
    return order
