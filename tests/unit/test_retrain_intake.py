"""Label intake validation: whole batches refused with each problem and its place named."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retrain.label_intake import LabelInputError, build_records, read_csv
from retrain.review import REVIEW_SOURCE

NOW = datetime(2025, 5, 1, tzinfo=UTC)


def test_build_records_fills_defaults_and_normalises_label() -> None:
    (record,) = build_records([{"text": "Up", "label": " POSITIVE ", "doc_id": ""}], where="labels",
                              annotator="api", source="api", now=NOW)
    assert (record.label, record.annotator, record.doc_id, record.labeled_at) == ("positive", "api", None, NOW)


def test_the_review_page_marks_its_labels_and_intake_keeps_the_mark() -> None:
    script = (Path(__file__).parents[2] / "dashboards" / "static" / "review.js").read_text(encoding="utf-8")
    (sent,) = re.findall(r'const SOURCE = "([^"]*)";', script)
    assert sent == REVIEW_SOURCE and re.search(r"JSON\.stringify\(\{[^}]*\bsource: SOURCE\b[^}]*\}\)", script)
    # The item's source overrides the API's default.
    (record,) = build_records([{"text": "Up", "label": "positive", "source": sent}], where="labels",
                              annotator="api", source="api", now=NOW)
    assert record.source == REVIEW_SOURCE


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


def test_labeled_at_in_the_future_or_without_zone_is_refused() -> None:
    # One label dated 2099 would be the newest label for good: no later label would ever be fresh.
    items = [{"text": "a", "label": "neutral", "labeled_at": "2099-01-01T00:00:00Z"},
             {"text": "b", "label": "neutral", "labeled_at": "2025-05-01T00:00:00"},
             {"text": "c", "label": "neutral", "labeled_at": "2025-05-01T00:04:59+00:00"}]
    with pytest.raises(LabelInputError) as err:
        build_records(items, where="labels", annotator="api", source="api", now=NOW)
    assert err.value.problems == ["labels[0]: labeled_at 2099-01-01T00:00:00+00:00 is in the future",
                                  "labels[1]: labeled_at: Input should have timezone info"]
    # Within the five minutes of clock skew allowed, and in the past, a given time is kept.
    records = build_records([items[2], {"text": "d", "label": "neutral", "labeled_at": "2020-01-01T01:00:00+01:00"}],
                            where="labels", annotator="api", source="api", now=NOW)
    assert [r.labeled_at for r in records] == [datetime(2025, 5, 1, 0, 4, 59, tzinfo=UTC),
                                               datetime(2020, 1, 1, tzinfo=UTC)]


def test_read_csv_accepts_a_byte_order_mark(tmp_path) -> None:
    exported = tmp_path / "excel.csv"
    exported.write_bytes("text,label\r\nProfit up,positive\r\n".encode("utf-8-sig"))
    assert [(r.text, r.label) for r in read_csv(exported, annotator="cli", now=NOW)] == [("Profit up", "positive")]


def test_read_csv_names_the_line_a_bad_row_starts_on(tmp_path) -> None:
    data = tmp_path / "l.csv"
    data.write_text('text,label\nProfit up,positive\n\n"two\nlines",bogus\nFine,neutral\nLoss,meh\n'
                    'Up, sharply,positive\n', encoding="utf-8")
    with pytest.raises(LabelInputError) as err:
        read_csv(data, annotator="cli", now=NOW)
    assert [p.split(": ")[0] for p in err.value.problems] == [f"{data}:4", f"{data}:7", f"{data}:8"]
    assert "label" in err.value.problems[0] and "3 fields, the header has 2" in err.value.problems[2]


def test_read_csv_takes_a_text_as_long_as_a_label_may_hold(tmp_path) -> None:
    long = "The call went through every segment in turn. " * 4000  # 184,000 characters: over csv's 131,072
    f = tmp_path / "long.csv"
    f.write_text(f'text,label\n"{long}",neutral\nShort one,positive\n', encoding="utf-8")
    records = read_csv(f, annotator="cli", now=NOW)
    assert [(len(r.text), r.label) for r in records] == [(len(long), "neutral"), (9, "positive")]
