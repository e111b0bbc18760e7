import pytest

from model.data import BadDataError, Example, class_weights, fingerprint, load, read_texts, stratified_split


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_csv_bad_rows_are_reported_with_file_and_line(tmp_path):
    f = _write(tmp_path / "d.csv", (
        b'text,label\n'
        b'"Profits rose",positive\n'          # line 2 ok
        b',negative\n'                         # line 3 missing text
        b'"Shares fell",awful\n'               # line 4 unknown label
        b'"multi\nline text",Neutral\n'        # lines 5-6 ok
        b'"bad \xff bytes",positive\n'         # line 7 bad encoding
        b'"Loss widened",Bearish\n'            # line 8 ok
    ))
    report = load([f])
    assert [(e.text, e.label) for e in report.examples] == [
        ("Profits rose", "positive"), ("multi\nline text", "neutral"), ("Loss widened", "negative")]
    assert [(b.line, b.reason.split(" (")[0]) for b in report.bad] == [
        (3, "blank text"), (4, "unknown label 'awful'"), (7, "not valid UTF-8")]
    assert all(b.file == str(f) for b in report.bad)
    assert str(report.bad[0]).startswith(f"{f}:3: ")


def test_jsonl_bad_rows_and_reject(tmp_path):
    f = _write(tmp_path / "d.jsonl", (
        b'{"text": "Revenue up", "label": "pos"}\n'
        b'not json\n'
        b'\n'
        b'{"label": "negative"}\n'
        b'["a list"]\n'
        b'{"text": "Guidance cut", "label": "negative"}\n'
    ))
    report = load([f])
    assert [e.label for e in report.examples] == ["positive", "negative"]
    assert [b.line for b in report.bad] == [2, 4, 5]
    assert "missing text" in report.bad[1].reason
    with pytest.raises(BadDataError) as exc:
        load([f], on_bad_rows="reject")
    assert f"{f}:2:" in str(exc.value) and len(exc.value.bad) == 3


def test_source_is_named_after_the_data_folder(tmp_path):
    folder = tmp_path / "tweets"
    folder.mkdir()
    f = _write(folder / "train.csv", b"text,label\nhello,neutral\n")
    assert load([f]).examples[0].source == "tweets"


def test_read_texts_keeps_one_entry_per_line(tmp_path):
    f = _write(tmp_path / "in.jsonl", b'{"text": "a"}\n\n{"text": 3}\n{"text": "b"}\n')
    items = list(read_texts(f))
    assert [(line, text) for line, text, _ in items] == [(1, "a"), (2, None), (3, None), (4, "b")]
    assert items[1][2].endswith("blank line") and "text is not a string" in items[2][2]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_jsonl_lines_end_at_newline_only(tmp_path, separator):
    # Legal unescaped inside a JSON string; str.splitlines() split the row there.
    rows = (f'{{"text": "Profit rose{separator}sharply", "label": "positive"}}\r\n'
            '{"text": "Loss widened", "label": "negative"}\n{"text": "Flat", "label": "bogus"}\n')
    f = _write(tmp_path / "d.jsonl", rows.encode("utf-8"))
    report = load([f])
    assert [(e.text, e.label) for e in report.examples] == [
        (f"Profit rose{separator}sharply", "positive"), ("Loss widened", "negative")]
    assert [b.line for b in report.bad] == [3]
    predict_input = _write(tmp_path / "in.jsonl", f'{{"text": "a{separator}b"}}\n\n{{"text": "c"}}'.encode())
    assert [(line, text) for line, text, _ in read_texts(predict_input)] == [(1, f"a{separator}b"), (2, None), (3, "c")]


def test_stratified_split_keeps_every_source_and_label_in_validation():
    examples = [Example(f"{s}{lab}{i}", lab, s) for s in ("a", "b") for lab in ("negative", "neutral", "positive")
                for i in range(10)]
    train, val = stratified_split(examples, 0.2, seed=1)
    assert len(train) + len(val) == len(examples) and not set(train) & set(val)
    assert {(e.source, e.label) for e in val} == {(e.source, e.label) for e in examples}
    assert stratified_split(examples, 0.2, seed=1) == (train, val)  # seeded
    singles = [Example("a", "negative", "x"), Example("b", "neutral", "x"), Example("c", "positive", "y")]
    assert stratified_split(singles, 0.1, seed=1) == (singles, [])  # no stratum to split: all train (it raised)


def test_repeated_rows_are_repeated_in_the_training_part_only():
    from model.data import split_and_repeat

    # A retrain's shape: replayed rows plus fresh labels that count several times.
    labels = ("negative", "neutral", "positive")
    examples = ([Example(f"replay {i}", labels[i % 3], "replay") for i in range(600)]
                + [Example(f"fresh {i}", labels[i % 3], "fresh") for i in range(90)])
    train, val = split_and_repeat(examples, 0.1, seed=90, repeat={"fresh": 3})
    assert not {e.text for e in val} & {e.text for e in train}  # nothing it validates on was trained on
    fresh_val = [e for e in val if e.source == "fresh"]
    assert fresh_val and len({e.text for e in fresh_val}) == len(fresh_val)
    fresh_train = [e.text for e in train if e.source == "fresh"]
    assert len(fresh_train) == 3 * (90 - len(fresh_val)) and all(fresh_train.count(t) == 3 for t in fresh_train)
    assert sum(e.source == "replay" for e in train) + sum(e.source == "replay" for e in val) == 600
    assert split_and_repeat(examples, 0.1, seed=90) == stratified_split(examples, 0.1, seed=90)


def test_fingerprint_ignores_order_and_sees_label_changes():
    a = [Example("x", "positive"), Example("y", "negative")]
    assert fingerprint(a) == fingerprint(list(reversed(a)))
    assert fingerprint(a) != fingerprint([Example("x", "neutral"), Example("y", "negative")])


def test_class_weights_favour_rare_classes():
    w = class_weights(["neutral"] * 8 + ["positive"] * 4 + ["negative"] * 1)
    assert w[0] > w[2] > w[1]
    assert sum(w) / 3 == pytest.approx(1.0)


def test_a_csv_field_may_be_as_long_as_a_text_may_be(tmp_path):
    from model.data import CSV_FIELD_LIMIT, load_file

    long = "The filing ran to many pages of detail. " * 5000  # 200,000 characters: over csv's default 131,072
    too_long = "x" * (CSV_FIELD_LIMIT + 1)
    f = tmp_path / "d.csv"
    f.write_text(f'text,label\n"{long}",neutral\n"{too_long}",neutral\nSales doubled,positive\n', encoding="utf-8")
    report = load_file(f)
    assert [(len(e.text), e.label) for e in report.examples] == [(len(long), "neutral"), (13, "positive")]
    assert [(b.line, "field larger than field limit" in b.reason) for b in report.bad] == [(3, True)]
    assert [(line, error is None) for line, _, error in read_texts(f)] == [(2, True), (3, False), (4, True)]


def test_jsonl_keys_match_in_any_case_as_csv_headers_do(tmp_path):
    from model.data import load_file

    csv_file = _write(tmp_path / "a.csv", b"Text , LABEL\nOrders slowed,Negative\n")
    jsonl_file = _write(tmp_path / "b.jsonl", b'{"Text": "Orders slowed", " LABEL": "Negative"}\n')
    for f in (csv_file, jsonl_file):
        report = load_file(f)
        assert [(e.text, e.label) for e in report.examples] == [("Orders slowed", "negative")] and not report.bad
    assert list(read_texts(jsonl_file)) == [(1, "Orders slowed", None)]


def test_a_source_column_names_each_rows_source(tmp_path):
    from model.data import load_file

    f = _write(tmp_path / "g.csv", b"text,label,source\nMargins held,neutral,wire\nMargins fell,negative,\n")
    report = load_file(f, source="golden", source_column="source")
    assert [e.source for e in report.examples] == ["wire", "golden"]
    assert [e.source for e in load_file(f, source="golden").examples] == ["golden", "golden"]


def test_a_csv_header_without_the_columns_is_one_problem_for_the_file_not_one_per_row(tmp_path):
    from model.data import missing_columns

    semicolons = _write(tmp_path / "semi.csv", b"text;label\nProfits rose;positive\nShares fell;negative\n")
    renamed = _write(tmp_path / "renamed.csv", b"headline,label\nProfits rose,positive\nShares fell,negative\n")
    report = load([semicolons, renamed])
    assert report.examples == [] and [(b.file, b.line) for b in report.bad] == [(str(semicolons), 1), (str(renamed), 1)]
    assert report.bad[0].reason == ("the header has no 'text' or 'label' column (it has: text;label), so no row is "
                                    "read; is it semicolon-separated? Columns are split at commas")
    assert report.bad[1].reason == "the header has no 'text' column (it has: headline, label), so no row is read"
    assert [line for line, _, _ in read_texts(renamed)] == [1]
    assert "no 'text' column" in missing_columns(renamed, ("text",))
    assert missing_columns(_write(tmp_path / "ok.csv", b"\xef\xbb\xbfText,Label\r\n"), ("text", "label")) is None


def test_a_quote_never_closed_is_named_not_read_as_one_text_with_the_rows_after_it(tmp_path):
    labelled = _write(tmp_path / "d.csv", b'text,label\n"Record quarter" says CEO,positive\n"Unclosed,negative\n'
                                          b'Shares fell,negative\nShares rose,positive\n')
    report = load([labelled])
    assert [e.text for e in report.examples] == ["Record quarter says CEO"]
    assert [str(b) for b in report.bad] == [f"{labelled}:3: a quote opened on line 3 is never closed, so lines 3-5 "
                                            "(the rest of the file) read as one row"]
    texts = _write(tmp_path / "in.csv", b'text\nShares rose\n"Unclosed\r\nShares fell\r\nProfit up')
    assert [(line, text, error is None) for line, text, error in read_texts(texts)] == [
        (2, "Shares rose", True), (3, None, False)]
    closed = _write(tmp_path / "ok.csv", b'text\nShares rose\n"closed\nat the end"\n')
    assert [text for _, text, _ in read_texts(closed)] == ["Shares rose", "closed\nat the end"]
