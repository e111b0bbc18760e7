"""`finsent model predict` over a file: a row the model cannot score costs its own line only."""

import io

import orjson

from finsent.schemas import Sentiment
from model.predict import predict_file, score_or_blame, unencodable

POSITIVE = Sentiment(label="positive", score=0.5, probabilities={"negative": 0.1, "neutral": 0.3, "positive": 0.6},
                     confidence=0.6)


class FakeScorer:
    """Fails a whole batch that holds BAD, or a text a tokenizer cannot encode, as the Rust tokenizer does."""

    version = "v-test"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def score(self, texts: list[str]) -> list[Sentiment]:
        self.batches.append(texts)
        if any("BAD" in text for text in texts):
            raise RuntimeError("the model broke")
        for text in texts:
            text.encode("utf-8")  # raises on a lone surrogate
        return [POSITIVE for _ in texts]


def predict(tmp_path, content: str, chunk: int = 512) -> tuple[dict[str, int], list[dict], FakeScorer]:
    path = tmp_path / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    out, scorer = io.StringIO(), FakeScorer()
    counts = predict_file(scorer, path, out, chunk=chunk)
    return counts, [orjson.loads(line) for line in out.getvalue().splitlines()], scorer


def test_a_lone_surrogate_is_its_row_s_error_and_the_other_rows_score(tmp_path):
    # JSON's \ud83d escape (an emoji cut in two) parses, then no tokenizer encodes it.
    counts, rows, _ = predict(tmp_path, '{"text":"profit rose"}\n{"text":"truncated tweet \\ud83d"}\n'
                                        '{"text":"loss widened"}\n')
    assert counts == {"scored": 2, "errors": 1}
    assert [row["line"] for row in rows] == [1, 2, 3] and ["error" in row for row in rows] == [False, True, False]
    assert f"{tmp_path / 'in.jsonl'}:2: " in rows[1]["error"] and "lone UTF-16 surrogate '\\ud83d'" in rows[1]["error"]


def test_a_row_the_model_fails_on_is_found_by_halving_its_chunk(tmp_path):
    texts = [f"row {i}" for i in range(1, 9)]
    texts[5] = "BAD row"
    counts, rows, scorer = predict(tmp_path, "".join(orjson.dumps({"text": t}).decode() + "\n" for t in texts), chunk=8)
    assert counts == {"scored": 7, "errors": 1}
    assert [row["line"] for row in rows] == list(range(1, 9))
    assert [row.get("label") for row in rows] == ["positive"] * 5 + [None] + ["positive"] * 2
    assert rows[5]["error"] == f"{tmp_path / 'in.jsonl'}:6: scoring failed: RuntimeError: the model broke"
    assert len(scorer.batches) == 7  # 8 texts, then 4 + 4, then 2 + 2 of the bad half, then 1 + 1


def test_score_or_blame_keeps_order_and_blames_each_bad_text():
    results = score_or_blame(FakeScorer(), ["a", "BAD 1", "b", "c", "BAD 2"])
    assert [r if isinstance(r, str) else r.label for r in results] == [
        "positive", "scoring failed: RuntimeError: the model broke", "positive", "positive",
        "scoring failed: RuntimeError: the model broke"]
    assert score_or_blame(FakeScorer(), []) == []


def test_unencodable_says_where_the_lone_surrogate_is():
    assert unencodable("fine \U0001f680") is None  # a whole pair is one character
    assert unencodable("ab\udc80") == "text holds a lone UTF-16 surrogate '\\udc80' at character 3 (half of a pair)"


def test_predict_refuses_to_write_over_its_input_before_loading_a_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from finsent.cli import app

    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path / "state"))  # no model: the check must come first
    monkeypatch.setenv("FINSENT_ELASTICSEARCH_URL", "http://127.0.0.1:1")
    data = tmp_path / "in.csv"
    data.write_text("text\nprofit rose\n", encoding="utf-8")
    (tmp_path / "link.csv").symlink_to(data)
    runner = CliRunner()
    for output, said in ((data, "is the input file"), (tmp_path / "link.csv", "is the input file"),
                         (tmp_path / "missing" / "out.jsonl", f"no folder {tmp_path / 'missing'}"),
                         (tmp_path, "is a folder")):
        result = runner.invoke(app, ["model", "predict", "--input", str(data), "--output", str(output)])
        assert result.exit_code == 1 and said in result.stderr, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert data.read_text(encoding="utf-8") == "text\nprofit rose\n"
    (renamed := tmp_path / "renamed.csv").write_text("headline\nprofit rose\n", encoding="utf-8")
    result = runner.invoke(app, ["model", "predict", "--input", str(renamed), "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and "the header has no 'text' column (it has: headline)" in result.stderr
