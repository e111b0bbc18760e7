"""The golden set file: read as training data is, since FINSENT_GOLDEN_SET may name a file written by hand."""

from __future__ import annotations

import pytest

from finsent.settings import Settings
from retrain.golden import GoldenSetError, Row, ensure_golden, read_golden


def test_a_hand_written_golden_set_is_read_as_training_data_is(tmp_path, caplog) -> None:
    path = tmp_path / "golden.csv"
    # A spreadsheet's "CSV UTF-8": byte order mark, CRLF, capitalised header and labels, a synonym, a bad row.
    path.write_bytes("\ufeffText,Label,Source\r\nThe lender wrote off its loan book,Negative,desk\r\n"
                     "Deliveries rose for a fifth month,Bullish,\r\nThe board meets on Tuesday,meh,desk\r\n"
                     "\r\nThe fund kept its fee,neutral,desk\r\n".encode())
    with caplog.at_level("WARNING", logger="retrain.golden"):
        rows = read_golden(path)
    assert rows == [Row("The lender wrote off its loan book", "negative", "desk"),
                    Row("Deliveries rose for a fifth month", "positive", "golden"),
                    Row("The fund kept its fee", "neutral", "desk")]
    assert f"{path}:4: unknown label 'meh'" in caplog.text


def test_a_golden_set_the_retrain_wrote_reads_back_unchanged(tmp_path) -> None:
    settings = Settings(golden_set=tmp_path / "golden.csv", golden_size=10)  # more than the rows: all of them
    rows = [Row("Costs, again, rose", "negative", "a"), Row("Quiet session", "neutral", "b"),
            Row('A "record" quarter', "positive", "a")]
    written = ensure_golden(settings, rows)
    assert read_golden(settings.golden_set) == written and sorted(written, key=str) == sorted(rows, key=str)


@pytest.mark.parametrize("content", ["text,label\nShares slid,3\nShares rose,\n", "text,label\n", ""])
def test_a_golden_set_without_a_usable_row_is_an_error_naming_the_file(tmp_path, content) -> None:
    path = tmp_path / "golden.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GoldenSetError, match=f"golden set {path} has no usable row") as caught:
        read_golden(path)
    assert isinstance(caught.value, ValueError)  # `finsent retrain golden` reports ValueErrors as such
    if "3" in content:
        assert f"the first {path}:2: numeric label '3'" in str(caught.value)


def test_the_golden_set_is_drawn_from_rows_the_first_model_never_trained_on(tmp_path) -> None:
    from model.data import SPLIT_FRACTION, SPLIT_SEED, Example, stratified_split
    from retrain.golden import golden_candidates, replay_sample

    words = {"negative": "fell", "neutral": "held", "positive": "rose"}
    rows = [Row(f"Company {i} shares {words[label]} on the day", label, source)
            for i in range(200) for label in words for source in ("news", "tweets") if i % 2 == (source == "news")]
    # The trainer's own split of the same rows, as the first model made it.
    train, held = stratified_split([Example(r.text, r.label, r.source) for r in rows], SPLIT_FRACTION, SPLIT_SEED)
    trained_on = {e.text for e in train}
    candidates = golden_candidates(rows)
    assert {r.text for r in candidates} == {e.text for e in held} and not trained_on & {r.text for r in candidates}
    settings = Settings(golden_set=tmp_path / "golden.csv", golden_size=1000)  # more than the held rows: them all
    golden = ensure_golden(settings, rows)
    assert len(golden) == len(held) == 60 and not trained_on & {r.text for r in golden}
    assert len(replay_sample(rows, 10_000, exclude=golden)) == len(rows) - 60  # the rest stays for the replay


def _rows() -> list[Row]:
    words = {"negative": "fell", "neutral": "held", "positive": "rose"}
    return [Row(f"Company {i} shares {words[label]} on the day", label, source)
            for i in range(200) for label in words for source in ("news", "tweets") if i % 2 == (source == "news")]


def test_the_golden_set_comes_from_the_rows_the_first_model_recorded_whatever_its_seed(tmp_path, caplog) -> None:
    from model.data import Example, split_and_repeat, write_held_out
    from model.registry import Registry

    rows = _rows()
    # A first model trained with --seed 7 --val-fraction 0.2, not the default split; then retrained once.
    train, held = split_and_repeat([Example(r.text, r.label, r.source) for r in rows], 0.2, 7)
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    write_held_out(folder, train, held)
    registry = Registry(tmp_path / "models")
    first = registry.register(folder, {"training": {"seed": 7}})
    (folder / "held_out_texts.txt").write_text("", encoding="ascii")  # the retrain's own split: not the first's
    retrained = registry.register(folder, {"parent_version": first, "training": {"retrain_trigger": "drift"}})
    registry.promote(retrained)
    settings = Settings(golden_set=tmp_path / "golden.csv", golden_size=1000)  # more than the held rows: them all
    with caplog.at_level("INFO", logger="retrain.golden"):
        golden = ensure_golden(settings, rows, registry=registry)
    assert {r.text for r in golden} == {e.text for e in held} and len(golden) == 120
    assert "drawn from the 120 rows the first model held out" in caplog.text


def test_a_first_model_that_recorded_nothing_falls_back_to_the_default_split_saying_so(tmp_path, caplog) -> None:
    from model.registry import Registry

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    registry = Registry(tmp_path / "models")
    registry.promote(registry.register(folder, {"training": {"seed": 13}}))  # trained before the record existed
    settings = Settings(golden_set=tmp_path / "golden.csv", golden_size=1000)
    with caplog.at_level("WARNING", logger="retrain.golden"):
        golden = ensure_golden(settings, _rows(), registry=registry)
    assert len(golden) == 60 and "did not record its validation rows" in caplog.text
    assert "drawn from the trainer's default split (--val-fraction 0.1 --seed 13)" in caplog.text


def test_training_records_the_texts_it_held_out_and_never_trained_on(tmp_path) -> None:
    import torch

    from model.data import Example, read_held_out, split_and_repeat, text_fingerprint
    from model.registry import Registry
    from model.training import train
    from tests.unit.test_model_calibrated import ROWS

    torch.set_num_threads(1)
    rows = ROWS + ROWS[:1]  # a text twice: it may fall on both sides of the split
    result = train(rows, registry=Registry(tmp_path), epochs=1, max_steps=1, batch_size=8, val_fraction=0.25,
                   progress=False, threads=1, seed=7)
    train_set, held = split_and_repeat([Example(t, label, "rows") for t, label in rows], 0.25, 7)
    expected = {text_fingerprint(e.text) for e in held} - {text_fingerprint(e.text) for e in train_set}
    assert read_held_out(Registry(tmp_path).path(result.version)) == expected and len(expected) >= 4
