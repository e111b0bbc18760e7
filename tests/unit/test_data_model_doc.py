"""DATA_MODEL.md names every field a consumer reads, and every field the records carry is in the strict mappings."""

from __future__ import annotations

from typing import Any

from finsent.schemas import Aggregate, Alert, LabelRecord, Record, ScoredDocument
from finsent.topology import MAPPINGS
from tests.conftest import ROOT

DOC = (ROOT / "DATA_MODEL.md").read_text()
CONSUMED = ("docs", "aggregates", "alerts", "labels", "models")  # the indices DATA_MODEL.md describes field by field


def _paths(properties: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for name, spec in properties.items():
        if "properties" in spec:
            out += _paths(spec["properties"], f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_mapped_field_of_a_consumed_index_is_documented():
    missing = [f"{index}: {path}" for index in CONSUMED for path in _paths(MAPPINGS[index]) if f"`{path}`" not in DOC]
    assert missing == [], "describe these fields in DATA_MODEL.md"


def _record_paths(model: type[Record], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        inner = field.annotation
        nested = [a for a in getattr(inner, "__args__", (inner,)) if isinstance(a, type) and issubclass(a, Record)]
        out += _record_paths(nested[0], f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return out


def test_every_field_of_a_record_is_in_its_index_mapping():
    # A field the strict mapping lacks is refused with the whole document (an index write, or a dead letter).
    records = {"docs": ScoredDocument, "aggregates": Aggregate, "alerts": Alert, "labels": LabelRecord}
    for index, model in records.items():
        leaves = _paths(MAPPINGS[index])
        mapped = set(leaves) | {leaf.rsplit(".", 1)[0] for leaf in leaves if "." in leaf}  # objects (dicts) too
        unmapped = [path for path in _record_paths(model) if path not in mapped]
        assert unmapped == [], f"{index}: {unmapped}"
