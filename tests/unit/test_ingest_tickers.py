"""Ticker extraction: the labelled tricky cases (precision/recall reported) and the rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ingest.tickers
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


@pytest.mark.parametrize("text,expected", [
    ("Zoom Video shares jump after earnings", ["ZM"]),
    ("Zoom's shares slide after weak guidance", ["ZM"]),
    ("Zoom (ZM) raises full-year forecast", ["ZM"]),
    ("Discount retailer Target warns of thinner margins", ["TGT"]),
    ("Analysts at Citi expect two more rate cuts this year", ["C"]),
    ("Walmart and Target report holiday sales on Tuesday", ["WMT", "TGT"]),
    ("Ford, GM and Tesla raise EV prices", ["F", "GM", "TSLA"]),  # each listed beside one accepted before
])
def test_ambiguous_alias_with_a_company_signal_next_to_it(extractor: TickerExtractor, text: str,
                                                          expected: list[str]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize("text", [
    # A market word somewhere is no longer enough: almost every headline has one.
    "Stocks Zoom Higher After Jobs Report; Traders Cheer",
    "Activist Investors Target Underperforming Bank Stocks",
    "New Student Visa Rules Hit University Revenues; Shares of Lenders Fall",
    "Actor Jim Ford signs a studio deal; shares of the studio climb",
    "Meta-analysis finds statins cut risk; drugmaker shares rise",
    "Target practice draws crowds as gun maker shares rise",
    "Children dressed up for Carnival in the town square",
])
def test_ambiguous_alias_without_a_company_signal_is_no_ticker(extractor: TickerExtractor, text: str) -> None:
    assert extractor.extract(text) == []


@pytest.mark.parametrize("text,expected", [
    # Capitals say nothing at a sentence's start or in title case: the name must act like a company there.
    ("Target cuts outlook as shoppers pull back", ["TGT"]),
    ("Ford Recalls 90,000 Pickups; Shares Slip", ["F"]),
    ("Apple beats estimates\nOracle faces lawsuit from shareholders", ["AAPL", "ORCL"]),
    ("Stocks Slide as Target Cuts Outlook", ["TGT"]),
    # Mid-sentence in a sentence-case line, a capital marks a proper noun: a market word suffices.
    ("Investors cheer Caterpillar cost cuts", ["CAT"]),
])
def test_weak_evidence_for_an_ambiguous_alias(extractor: TickerExtractor, text: str, expected: list[str]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Amazon rainforest fires threaten soy exports, traders say", []),
    ("Big Apple Landlords Face Rising Loan Defaults at Banks", []),  # excluded phrases match in any case
    ("The Oracle of Omaha raises his stake in Chevron", ["CVX"]),
    ("Apple shares rise as Big Apple stores see record sales", ["AAPL"]),  # only the phrase is excluded
])
def test_excluded_phrases_name_no_company(extractor: TickerExtractor, text: str, expected: list[str]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize("text,expected", [
    # A dateline, not a listing: the word after it is read like a bare symbol.
    ("Amex: CEO Squeri sees steady card spending", ["AXP"]),
    ("Nasdaq: US futures edge higher before inflation data", []),
    ("NYSE: IT glitch delays the opening auction", []),
    ("Five years on the NYSE: A retrospective on the SPAC boom", []),
    ("Nasdaq: FDA approves a new obesity drug", []),
    ("NYSE: KO slips after a sugar tax report", ["KO"]),
    # A listing is trusted even for a word or an unknown symbol.
    ("Agilent (NYSE: A) beats estimates", ["A"]),
    ("Tiny Acme (NASDAQ: ACME) doubles", ["ACME"]),
])
def test_exchange_prefix_outside_a_listing_needs_a_known_symbol(extractor: TickerExtractor, text: str,
                                                                 expected: list[str]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Royal Bank of Canada (TSX: RY) lifts its dividend", ["RY.TO"]),
    ("Saputo Inc. (TSX: SAP) trims outlook on weak dairy margins", ["SAP.TO"]),  # not SAP SE
    ("Vodafone (LON: VOD) shares drop after profit warning", ["VOD.L"]),
    ("BHP Group (ASX:BHP) raises copper output guidance", ["BHP.AX"]),
    ("SAP SE (ETR: SAP) beats cloud revenue forecasts", ["SAP", "SAP.DE"]),
    ("Brookfield (TSE: BN) raises capital", []),  # Tokyo or Toronto: no suffix to give
    ("TSX: SAP slides at the open", []),  # a dateline: no suffixed symbol, and still not SAP SE
])
def test_non_us_exchange_tags_a_suffixed_symbol_never_the_us_one(extractor: TickerExtractor, text: str,
                                                                  expected: list[str]) -> None:
    assert extractor.extract(text) == expected


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


def test_dictionary_file_may_exclude_phrases(tmp_path: Path) -> None:
    path = tmp_path / "tickers.csv"
    path.write_text("ticker,name,exchange,aliases,exclude\nACME,Acme Corp,NYSE,Acme,Acme Gulch|Acme Falls\n"
                    "ZZZ,Zed Inc,NYSE,Zed\n", "utf-8")  # a row may leave the exclude column out
    extractor = TickerExtractor(TickerDictionary.load(path))
    assert extractor.extract("Flood warning for Acme Gulch residents") == []
    assert extractor.extract("Acme beats; Zed misses") == ["ACME", "ZZZ"]


def test_bad_dictionary_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ticker,name,exchange,aliases\n$$$,Broken,NYSE,Broken\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:2"):
        TickerDictionary.load(path)


class Counted:
    """How often extraction reads what the first rules found: a hit or listing read, or a ticker compared."""

    reads = 0


class CountedHit(tuple):
    def __getitem__(self, index):
        Counted.reads += 1
        return super().__getitem__(index)

    def __iter__(self):
        Counted.reads += 1
        return super().__iter__()


class CountedTicker(str):
    __hash__ = str.__hash__

    def __eq__(self, other):
        Counted.reads += 1
        return super().__eq__(other)


@pytest.fixture
def counted(monkeypatch) -> type[Counted]:
    """The cashtags, exchange-prefixed symbols and listings the extractor finds, counting their reads."""
    cashtags, prefixed = TickerExtractor._cashtags, TickerExtractor._prefixed

    def counted_hits(hits: list) -> list:
        return [CountedHit((start, end, CountedTicker(ticker))) for start, end, ticker in hits]

    def counted_prefixed(self, text: str) -> tuple[list, list]:
        hits, listings = prefixed(self, text)
        return counted_hits(hits), [CountedHit(span) for span in listings]

    monkeypatch.setattr(TickerExtractor, "_cashtags", lambda self, text: counted_hits(cashtags(self, text)))
    monkeypatch.setattr(TickerExtractor, "_prefixed", counted_prefixed)
    monkeypatch.setattr(Counted, "reads", 0)
    return Counted


class Scanned:
    """A pattern of :mod:`ingest.tickers`, or its ``re``, that notes each call given a string of at least ``size``
    characters to read from its start: a pass over (most of) the text."""

    def __init__(self, pattern, size: int, scans: list[str]) -> None:
        self.pattern, self.size, self.scans = pattern, size, scans

    def __getattr__(self, name: str):
        method = getattr(self.pattern, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            # A pattern's method reads from a position given after the string; re's functions take the pattern first.
            strings = args[1:] if self.pattern is re else args[:1] if len(args) == 1 and not kwargs else ()
            if any(isinstance(s, str) and len(s) >= self.size for s in strings):
                self.scans.append(name)
            return method(*args, **kwargs)
        return call


def scanned(monkeypatch, size: int) -> list[str]:
    scans: list[str] = []
    for name, value in vars(ingest.tickers).items():
        if isinstance(value, re.Pattern) or value is re:
            monkeypatch.setattr(ingest.tickers, name, Scanned(value, size, scans))
    return scans


@pytest.mark.parametrize("headline,sep,expected", [
    ("$XOM rises as investors eye Target", ". ", ["XOM", "TGT"]),  # each Target read every hit and the text
    ("Target practice at the range", ". ", []),  # searched the whole text for a market word, in vain
    ("Investors Cheer as Target Slides", " ", ["TGT"]),  # read its line, here the whole text, for title case
    ("$XOM, Ford, Target and Zoom", ". ", ["XOM", "F", "TGT", "ZM"]),  # each round judged every name again
    ("(NYSE: KO) Apple and AAPL", " ", ["KO", "AAPL"]),  # each name and symbol read every listing
])
def test_a_headline_repeated_is_judged_as_once_reading_the_hits_and_the_text_a_few_times(
        extractor: TickerExtractor, counted: type[Counted], monkeypatch, headline: str, sep: str,
        expected: list[str]) -> None:
    # Each ambiguous name read every hit and the whole text again: "Investors eye Target" 2,000 times took 9 s to
    # tag, "Target practice at the range" 40. Counts, not a clock, say it no longer does.
    assert extractor.extract(headline) == expected
    text = sep.join([headline] * 200)
    counted.reads = 0
    scans = scanned(monkeypatch, len(text) // 2)
    found = extractor.extract(text)
    reads = counted.reads
    assert found == expected
    assert reads <= 2_000, reads  # a few reads of each of the 200-400 hits and listings, not one per mention
    assert len(scans) <= 12, scans  # a few passes over the text, not one per mention


def test_many_symbols_are_ordered_without_comparing_each_with_every_other(extractor: TickerExtractor,
                                                                         counted: type[Counted]) -> None:
    # Each ticker was looked for among those before it: 8,000 distinct cashtags took half a second.
    symbols = [a + b + c for a in "ABCDEFGH" for b in "KLMNO" for c in "STUVX"]  # 200, most not in the dictionary
    found = extractor.extract(" ".join("$" + symbol for symbol in symbols))
    reads = counted.reads
    assert found == symbols
    assert reads <= 2_000, reads
