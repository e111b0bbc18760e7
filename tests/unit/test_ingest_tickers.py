"""Ticker extraction: the labelled tricky cases (precision/recall reported) and the rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.tickers import TickerDictionary, TickerExtractor, normalise_ticker

CASES = Path(__file__).parent / "data" / "ticker_cases.jsonl"


@pytest.fixture(scope="module")
def extractor() -> TickerExtractor:
    return TickerExtractor(TickerDictionary.load())


def test_shipped_dictionary_is_sane() -> None:
    dictionary = TickerDictionary.load()
    assert len(dictionary) >= 100
    assert dictionary.alias_to_ticker["Apple"] == "AAPL"
    assert "BRK.B" in dictionary


def test_precision_and_recall_on_labelled_cases(extractor: TickerExtractor) -> None:
    tp = fp = fn = 0
    misses = []
    for line in CASES.read_text("utf-8").splitlines():
        case = json.loads(line)
        found, truth = set(extractor.extract(case["text"])), set(case["tickers"])
        tp += len(found & truth)
        fp += len(found - truth)
        fn += len(truth - found)
        if found != truth:
            misses.append(f"{case['text']!r}: found {sorted(found)}, expected {sorted(truth)}")
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"\nticker extraction on {CASES.name}: precision {precision:.3f}, recall {recall:.3f} "
          f"(tp {tp}, fp {fp}, fn {fn})\n  " + "\n  ".join(misses))
    assert precision >= 0.95, misses
    assert recall >= 0.90, misses


def test_order_is_first_mention(extractor: TickerExtractor) -> None:
    assert extractor.extract("Nvidia beats; later $AAPL and Microsoft") == ["NVDA", "AAPL", "MSFT"]


def test_common_words_need_cashtag_or_prefix(extractor: TickerExtractor) -> None:
    assert extractor.extract("It is ALL ON NOW") == []
    assert extractor.extract("$ALL and NYSE:ON and $NOW") == ["ALL", "ON", "NOW"]


def test_a_list_of_symbols_is_not_shouting_but_a_headline_in_capitals_is(extractor: TickerExtractor) -> None:
    assert extractor.extract("AAPL, MSFT, NVDA rally") == ["AAPL", "MSFT", "NVDA"]
    assert extractor.extract("TSLA AMZN NFLX slide in late trading") == ["TSLA", "AMZN", "NFLX"]
    # In capitals, bare words may be anything: only cashtags, prefixes and names count there.
    assert extractor.extract("BREAKING: SHARES PLUNGE AFTER WEAK GUIDANCE AT AMGN") == []
    assert extractor.extract("BREAKING: SHARES PLUNGE AFTER WEAK GUIDANCE AT $AMGN") == ["AMGN"]


def test_ambiguous_alias_needs_market_context(extractor: TickerExtractor) -> None:
    assert extractor.extract("Target practice at the range") == []
    assert extractor.extract("Target stock drops after earnings") == ["TGT"]


@pytest.mark.parametrize("raw,expected", [
    ("$brk-b", "BRK.B"), ("BRK/B", "BRK.B"), ("aapl", "AAPL"), ("$5", None), ("", None), ("TOOLONGTICKER1", None),
])
def test_normalise_ticker(raw: str, expected: str | None) -> None:
    assert normalise_ticker(raw) == expected


def test_larger_dictionary_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "tickers.csv"
    path.write_text("ticker,name,exchange,aliases\nACME,Acme Corp,NYSE,Acme|~Roadrunner\n", "utf-8")
    extractor = TickerExtractor(TickerDictionary.load(path))
    assert extractor.extract("Acme beats") == ["ACME"]
    assert extractor.extract("Roadrunner runs") == []
    assert extractor.extract("Roadrunner shares rise") == ["ACME"]


def test_bad_dictionary_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ticker,name,exchange,aliases\n$$$,Broken,NYSE,Broken\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:2"):
        TickerDictionary.load(path)
