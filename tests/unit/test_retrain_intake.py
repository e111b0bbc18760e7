"""Label intake validation: whole batches refused with each problem and its place named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retrain.label_intake import LabelInputError, build_records, read_csv

NOW = datetime(2025, 5, 1, tzinfo=UTC)


def test_build_records_fills_defaults_and_normalises_label() -> None:
    (record,) = build_records([{"text": "Up", "label": " POSITIVE ", "doc_id": ""}], where="labels",
                              annotator="api", source="api", now=NOW)
    assert (record.label, record.annotator, record.doc_id, record.labeled_at) == ("positive", "api", None, NOW)


def test_build_records_refuses_the_whole_batch() -> None:
    with pytest.raises(LabelInputError) as err:
        build_records([{"text": "ok", "label": "neutral"}, {"text": "", "label": "neutral"}, "junk",
                       {"text": "x", "label": "bullish"}], where="labels", annotator="a", source="api", now=NOW)
    problems = err.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("labels[1]: text") and problems[1].startswith("labels[2]: expected an object")
    assert problems[2].startswith("labels[3]: label")


def test_read_csv(tmp_path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("text,label,doc_id,annotator\nA,positive,d1,\nB,negative,,zoe\n", encoding="utf-8")
    records = read_csv(good, annotator="cli", now=NOW)
    assert [(r.text, r.doc_id, r.annotator, r.source) for r in records] == [
        ("A", "d1", "cli", "csv"), ("B", None, "zoe", "csv")]
    no_header = tmp_path / "bad.csv"
    no_header.write_text("sentence,sentiment\nA,positive\n", encoding="utf-8")
    with pytest.raises(LabelInputError, match=r"lacks column\(s\) \['label', 'text'\]"):
        read_csv(no_header, annotator="cli")
    with pytest.raises(LabelInputError, match="missing.csv"):
        read_csv(tmp_path / "missing.csv", annotator="cli")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"text,label\n\xff\xfe,positive\n")
    with pytest.raises(LabelInputError, match="not UTF-8"):
        read_csv(binary, annotator="cli")
