"""The broker pass of ticker extraction: a bank acting as an analyst on another company is not tagged.

Through the extractor, which finds the hits the pass reads, and on hand-made hits through the pass itself.
"""

from __future__ import annotations

import pytest

import ingest.tickers
from ingest.brokers import without_acting_brokers
from ingest.tickers import TickerDictionary, TickerExtractor


@pytest.fixture(scope="module")
def extractor() -> TickerExtractor:
    return TickerExtractor(TickerDictionary.load())


def test_the_pass_reads_only_the_text_and_the_hits() -> None:
    acting = [(0, 13, "GS"), (23, 28, "TSLA")]
    assert without_acting_brokers("Goldman Sachs upgrades Tesla", acting) == [(23, 28, "TSLA")]
    # The bank stays when the company acted on was not found: nothing else would carry the story.
    assert without_acting_brokers("Goldman Sachs upgrades Tesla", acting[:1]) == acting[:1]
    listed = [(0, 13, "GS"), (18, 23, "AAPL")]
    assert without_acting_brokers("Goldman Sachs and Apple shares fall", listed) == listed


@pytest.mark.parametrize("text,expected", [
    ("Goldman Sachs upgrades Tesla to buy", ["TSLA"]),
    ("Morgan Stanley raises its price target on Apple", ["AAPL"]),
    ("Goldman lowers Intel price target, keeps sell rating", ["INTC"]),
    ("Tesla upgraded to buy at Goldman Sachs", ["TSLA"]),
    ("Apple price target raised by Morgan Stanley", ["AAPL"]),
    ("Nvidia is a buy, says Goldman Sachs analyst", ["NVDA"]),
    ("JPMorgan upgrades Goldman Sachs to overweight", ["GS"]),
    ("Goldman Sachs upgraded by JPMorgan", ["GS"]),
    ("Analysts at Citi raise their price target on Nvidia", ["NVDA"]),  # the plural verb of "analysts"
    # The bank itself is the news: no company acted on, another role, or another sentence.
    ("Goldman Sachs upgrades its own outlook", ["GS"]),
    ("JPMorgan raises stake in Tesla", ["JPM", "TSLA"]),
    ("JPMorgan cuts 500 jobs; Tesla shares slide", ["JPM", "TSLA"]),
    ("Goldman Sachs upgrades Tesla. Goldman Sachs shares rose 2% on its own results", ["GS", "TSLA"]),
])
def test_a_broker_acting_as_analyst_on_another_company_is_not_tagged(extractor: TickerExtractor, text: str,
                                                                      expected: list[str]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize("acting,acted_on,bystander,tagged", [
    # Each phrasing of an analyst's call, beside a near-identical text where the bank is the news or a party to it.
    ("Goldman Sachs and Morgan Stanley upgrade Apple", ["AAPL"], "Goldman Sachs and Apple shares fall", ["GS", "AAPL"]),
    ("Tesla gets Goldman upgrade", ["TSLA"], "Tesla and Goldman Sachs upgrade their partnership", ["TSLA", "GS"]),
    ("Goldman Sachs says Tesla is a buy", ["TSLA"], "Goldman Sachs says it will cut jobs", ["GS"]),
    ("Goldman Sachs: Tesla is a buy", ["TSLA"], "Goldman Sachs: Apple card talks end", ["GS", "AAPL"]),
    # A forecast of another company's shares is an analyst's view; the bank's own news keeps it.
    ("Goldman Sachs: Tesla shares could double", ["TSLA"], "Goldman Sachs: profit beats estimates", ["GS"]),
    ("Goldman Sachs says Apple shares should keep rising", ["AAPL"], "Goldman Sachs says its shares could rise",
     ["GS"]),
    # A list of banks takes the plural verb: "raise", not "raises".
    ("JPMorgan and Wells Fargo raise their price targets on Microsoft", ["MSFT"],
     "JPMorgan and Wells Fargo raise dividends after stress test", ["JPM", "WFC"]),
    ("Goldman Sachs and Morgan Stanley lift price targets on Nvidia", ["NVDA"],
     "Goldman Sachs and Nvidia lift their AI spending targets", ["GS", "NVDA"]),
    # "target" the noun, not the verb: a bank cutting its own costs is its news.
    ("JPMorgan lowers Microsoft target, keeps buy", ["MSFT"],
     "JPMorgan and Wells Fargo lower costs as Microsoft targets AI", ["JPM", "WFC", "MSFT"]),
    ("Morgan Stanley's Tesla price target", ["TSLA"], "Morgan Stanley's profit beats", ["MS"]),
    ("Tesla: Goldman initiates at buy", ["TSLA"], "Tesla: Goldman Sachs cuts 500 jobs", ["TSLA", "GS"]),
])
def test_more_phrasings_of_a_broker_acting_as_analyst(extractor: TickerExtractor, acting: str, acted_on: list[str],
                                                     bystander: str, tagged: list[str]) -> None:
    assert extractor.extract(acting) == acted_on
    assert extractor.extract(bystander) == tagged


@pytest.mark.parametrize("text,expected", [
    # A forecast after "Bank:" or "Bank says" is a price move of the company or its shares, with no object.
    ("Goldman Sachs says Nvidia stock could rally 30%", ["NVDA"]),
    ("Goldman Sachs: Amazon shares to hit $250", ["AMZN"]),
    ("Morgan Stanley says Microsoft stock may fall further", ["MSFT"]),
    ("Goldman Sachs: Apple stock could keep climbing", ["AAPL"]),
    ("Morgan Stanley: Nvidia stock could be worth $1,000", ["NVDA"]),
    ("Goldman Sachs says Apple will reach $4 trillion", ["AAPL"]),
    ("Morgan Stanley: Tesla could double", ["TSLA"]),  # the company itself, not only its shares
    ("Goldman: Nvidia can still rally 40%", ["NVDA"]),
    ("JPMorgan: Amazon to hit $300", ["AMZN"]),
    ("Wells Fargo: Tesla could fall further", ["TSLA"]),
    ("Bank of America: Apple could rally 20% on AI", ["AAPL"]),
    ("Goldman Sachs says Microsoft shares will be added to its model portfolio", ["MSFT"]),
    # Not a price move: the bank is a party to the company's news, or the news is the bank's own.
    ("Goldman Sachs says Apple stock will join its employee fund", ["GS", "AAPL"]),
    ("Goldman Sachs says Apple shares will be sold in a block trade", ["GS", "AAPL"]),
    ("Goldman Sachs: Tesla shares to be offered in a placement it leads", ["GS", "TSLA"]),
    ("Goldman Sachs: Apple could drop card partnership", ["GS", "AAPL"]),
    ("Goldman Sachs says Apple could reach deal on card", ["GS", "AAPL"]),
    ("Morgan Stanley: Apple deal could double fee income", ["MS", "AAPL"]),
    ("Goldman Sachs: Apple card losses could double", ["GS", "AAPL"]),
    ("Morgan Stanley: we could cut jobs", ["MS"]),
    ("Morgan Stanley: profit could double", ["MS"]),
    ("Goldman Sachs could cut jobs", ["GS"]),
    ("Goldman Sachs shares jump", ["GS"]),
])
def test_a_banks_forecast_of_another_company_is_a_price_move(extractor: TickerExtractor, text: str,
                                                             expected: list[str]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize("text,expected", [
    # The bank's change of target on a company named before it, as a noun or a verb.
    ("Tesla shares jump on Goldman boost to price target", ["TSLA"]),
    ("Tesla falls on Goldman cut to price target", ["TSLA"]),
    ("Nvidia rallies on JPMorgan's boost to its price target", ["NVDA"]),
    ("Apple slips on Morgan Stanley target cut", ["AAPL"]),
    ("Tesla gains on Citi raise in price target", ["TSLA"]),
    ("Tesla shares jump after Goldman raises price target", ["TSLA"]),
    ("Tesla shares fall as Morgan Stanley cuts its price target", ["TSLA"]),
    ("Microsoft gains as JPMorgan lifts target to $600", ["MSFT"]),
    ("Nvidia climbs after Goldman and Morgan Stanley raise price targets", ["NVDA"]),
    ("JPMorgan jumps as Goldman raises its price target", ["JPM"]),  # a bank may be the company acted on
    # The bank's own goals, a stake, a list with the company, another sentence: the bank stays.
    ("Tesla shares jump on Goldman boost to its stake", ["TSLA", "GS"]),
    ("Tesla shares jump as Goldman boosts its own profit target", ["TSLA", "GS"]),
    ("Tesla shares fall after Goldman cuts jobs target", ["TSLA", "GS"]),
    ("Tesla falls as JPMorgan cuts its inflation target", ["TSLA", "JPM"]),
    ("Apple rises after Wells Fargo raises its buyback target", ["AAPL", "WFC"]),
    ("Tesla and Goldman shares jump on boost to price targets", ["TSLA", "GS"]),
    ("Goldman Sachs shares jump on boost to price target", ["GS"]),
    ("Tesla falls on Goldman cut to price target; Goldman shares slip", ["TSLA", "GS"]),
])
def test_a_change_of_target_after_the_company_is_the_banks_call(extractor: TickerExtractor, text: str,
                                                                expected: list[str]) -> None:
    assert extractor.extract(text) == expected


class CountedHits(list):
    """Hits that count how often the pass reads them whole."""

    reads = 0

    def __iter__(self):
        self.reads += 1
        return super().__iter__()


@pytest.mark.parametrize("headline,sep,end,expected", [
    ("Goldman Sachs upgrades Tesla to buy", ". ", "", ["TSLA"]),
    ("Tesla gets Goldman upgrade", " ", "", ["TSLA"]),  # one sentence of 600 mentions
    ("Tesla upgraded to buy at Goldman Sachs", "\n", "", ["TSLA"]),
    ("Tesla: Goldman initiates at buy", " ", "", ["TSLA"]),
    ("Goldman Sachs and Morgan Stanley", " and ", " upgrade Apple", ["AAPL"]),  # one list of 600 banks
])
def test_a_headline_repeated_is_judged_as_once_reading_the_hits_a_few_times(extractor: TickerExtractor, monkeypatch,
                                                                            headline: str, sep: str, end: str,
                                                                            expected: list[str]) -> None:
    # Each mention read every hit (and the text before it) again: 500 repetitions took half a second, 2000 took ten.
    # Now the hits are sorted once and each mention reads its neighbours: a count, not a clock, says so.
    assert extractor.extract(headline + end) == expected
    text = sep.join([headline] * 300) + end
    found: list = []
    with monkeypatch.context() as patched:  # the hits the extractor gives the pass
        patched.setattr(ingest.tickers, "without_acting_brokers", lambda _, hits: found.append(list(hits)) or hits)
        extractor.extract(text)
    hits = CountedHits(found[0])
    kept = without_acting_brokers(text, hits)
    assert sorted({ticker for _, _, ticker in kept}) == sorted(expected) and len(hits) >= 300
    assert hits.reads <= 6, hits.reads  # not one read per mention


@pytest.mark.parametrize("text,hits,kept", [
    # A view found inside another's: "is a buy" starts in the hit "Tesla is", "a buy" after it.
    ("Goldman Sachs says Tesla is a buy", [(0, 13, "GS"), (19, 27, "TSLA")], [(19, 27, "TSLA")]),
    # A hit that ends inside a word: the action right after it counts, as a search from there reads it.
    ("Teslaupgraded at Goldman", [(0, 5, "TSLA"), (17, 24, "GS")], [(0, 5, "TSLA")]),
    # A full stop right before the bank ends the sentence before it, with or without a space.
    ("Tesla.Goldman upgrades", [(0, 5, "TSLA"), (6, 13, "GS")], [(0, 5, "TSLA"), (6, 13, "GS")]),
    # A list of banks that runs past the end of the sentence ("vs." is one) acts on nothing after it.
    ("Goldman Sachs vs. Morgan Stanley upgrade Apple", [(0, 13, "GS"), (18, 32, "MS"), (41, 46, "AAPL")],
     [(0, 13, "GS"), (41, 46, "AAPL")]),
])
def test_the_pass_reads_each_mention_s_neighbours_as_a_scan_of_every_hit_did(text: str, hits: list,
                                                                            kept: list) -> None:
    assert without_acting_brokers(text, hits) == kept
