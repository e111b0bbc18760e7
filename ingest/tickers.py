"""Ticker extraction: cashtags, exchange prefixes, bare symbols and company names.

Precision first: a wrong ticker puts a document on the wrong dashboard. So
- cashtags (``$AAPL``, ``$BRK.B``) and exchange prefixes (``NASDAQ:AAPL``, ``(NYSE: KO)``) are
  trusted for any well-formed symbol;
- a bare upper-case symbol counts only when it is in the dictionary, has three letters or
  more, is not an English word or acronym (``ALL``, ``NOW``, ``CAT``…) and the text is not
  shouting in capitals;
- company names and aliases come from the dictionary file, matched case-sensitively on
  word boundaries; an alias written ``~Target`` is ambiguous and counts only when the text
  also talks about markets (shares, earnings, CEO…) or names another ticker.

Dictionary file (CSV): ``ticker,name,exchange,aliases`` with aliases separated by ``|``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_WORD = re.compile(r"[^\W\d_]+")  # runs of letters
_TICKER = re.compile(r"^[A-Z][A-Z0-9]{0,9}(?:\.[A-Z0-9]{1,4})?$")
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.\-/][A-Za-z]{1,2})?)(?![\w$])")
_PREFIXED = re.compile(
    r"(?<![\w])(?i:nasdaq|nyse|nysearca|nyse\s?american|nyse\s?mkt|amex|bats|cboe|otc|otcmkts|otcqx)"
    r"\s?:\s?\$?([A-Z][A-Z0-9]{0,5}(?:[.\-/][A-Z]{1,2})?)(?![\w])"
)
_BARE = re.compile(r"(?<![\w$&.:/-])([A-Z]{3,5}(?:\.[A-Z])?)(?![\w&-])")
_CONTEXT = re.compile(
    r"(?i)\b(?:shares?|stocks?|earnings|revenues?|profits?|sales|quarter(?:ly)?|ceo|cfo|investors?|"
    r"analysts?|dividends?|guidance|inc|corp|co|ltd|plc|market|valuation|ipo|acquisitions?|acquires?|"
    r"merger|deal|price target|upgraded?|downgraded?|buybacks?|outlook|results|nasdaq|nyse|stake|"
    r"layoffs|forecasts?|margins?|subscribers|customers|payments|rall(?:y|ied|ies)|slump(?:s|ed)?|"
    r"wall street|traders?|bonds?|bank|rating|regulators?|lawsuit|contract|orders|deliveries)\b"
)

# Symbols that are also words or acronyms: they need a cashtag or an exchange prefix.
COMMON_WORDS = frozenset("""
A AI ALL AM AN ANY ARE ARM AT BE BEN BIG BOX CAN CAR CASH CAT CEO CFO COIN COST DE DIS DOG EAT
EPS ETF EU EV EYE FAST FED FLY FOR FUN GAS GDP GO GOLD GOOD HAS HE HOOD HUGE ICE IMF IPO IT JOB
JOBS KEY LIFE LOVE LOW MAIN MAN MAX ME MET NEW NICE NO NOT NOW OLD ON ONE OPEN OR OUT PEAK PLAY
PLUG PM REAL RUN SAFE SEC SEE SHOP SO SNOW SPOT TECH THE TRUE TWO UK UPS US USA USD WELL WORK YOU
CPI PPI FOMC ECB GAAP ESG ROI YOY QOQ ATH CEO NYSE NASDAQ OTC AMEX LLC INC CORP AND BUY SELL HOLD
""".split())


def normalise_ticker(raw: str) -> str | None:
    """``$brk-b`` → ``BRK.B``; None when it cannot be a ticker."""
    symbol = raw.strip().lstrip("$").upper().replace("-", ".").replace("/", ".")
    return symbol if _TICKER.match(symbol) else None


@dataclass(frozen=True, slots=True)
class Company:
    ticker: str
    name: str
    exchange: str
    aliases: tuple[str, ...]


class TickerDictionary:
    """Tickers and their company names; the shipped file lists the largest US-listed companies."""

    def __init__(self, companies: list[Company]) -> None:
        self.companies = {c.ticker: c for c in companies}
        self.alias_to_ticker: dict[str, str] = {}
        self.ambiguous: set[str] = set()
        for company in companies:
            for alias in company.aliases:
                plain = alias.lstrip("~")
                self.alias_to_ticker.setdefault(plain, company.ticker)
                if alias.startswith("~"):
                    self.ambiguous.add(plain)

    def __contains__(self, ticker: str) -> bool:
        return ticker in self.companies

    def __len__(self) -> int:
        return len(self.companies)

    @classmethod
    def load(cls, path: Path | None = None) -> TickerDictionary:
        if path is None:
            text = resources.files("ingest.data").joinpath("tickers.csv").read_text("utf-8")
            where = "ingest/data/tickers.csv"
        else:
            text = Path(path).read_text("utf-8")
            where = str(path)
        return cls.parse(text, where)

    @classmethod
    def parse(cls, text: str, where: str = "tickers.csv") -> TickerDictionary:
        reader = csv.DictReader(text.splitlines())
        missing = {"ticker", "aliases"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{where}: missing column(s) {sorted(missing)}")
        companies = []
        for line, row in enumerate(reader, start=2):
            ticker = normalise_ticker(row.get("ticker") or "")
            if ticker is None:
                raise ValueError(f"{where}:{line}: {row.get('ticker')!r} is not a ticker symbol")
            aliases = tuple(a.strip() for a in (row.get("aliases") or "").split("|") if a.strip().lstrip("~"))
            companies.append(Company(ticker, (row.get("name") or "").strip(), (row.get("exchange") or "").strip(),
                                     aliases))
        return cls(companies)


class TickerExtractor:
    """Finds tickers in text, in order of first mention."""

    def __init__(self, dictionary: TickerDictionary) -> None:
        self.dictionary = dictionary
        aliases = sorted(dictionary.alias_to_ticker, key=len, reverse=True)
        self._names = (
            re.compile(r"(?<![\w&$@#])(" + "|".join(re.escape(a) for a in aliases) + r")(?![\w&])")
            if aliases else None
        )

    def extract(self, text: str) -> list[str]:
        hits: list[tuple[int, str]] = []
        for match in _CASHTAG.finditer(text):
            raw = match.group(1)
            ticker = normalise_ticker(raw)
            # "$aapl" is fine for a known company; an unknown lower-case one is more likely noise.
            if ticker and (raw.isupper() or ticker in self.dictionary):
                hits.append((match.start(), ticker))
        for match in _PREFIXED.finditer(text):
            ticker = normalise_ticker(match.group(1))
            if ticker:
                hits.append((match.start(), ticker))
        if not _shouting(text, self.dictionary):
            for match in _BARE.finditer(text):
                symbol = match.group(1)
                if symbol in self.dictionary and symbol not in COMMON_WORDS:
                    hits.append((match.start(), symbol))
        if self._names is not None:
            context: bool | None = None
            for match in self._names.finditer(text):
                alias = match.group(1)
                if alias in self.dictionary.ambiguous:
                    if context is None:
                        context = bool(_CONTEXT.search(text)) or any(h for h in hits)
                    if not context:
                        continue
                hits.append((match.start(), self.dictionary.alias_to_ticker[alias]))
        ordered: list[str] = []
        for _, ticker in sorted(hits):
            if ticker not in ordered:
                ordered.append(ticker)
        return ordered


def _shouting(text: str, dictionary: TickerDictionary) -> bool:
    """A text in capitals, where any word may look like a symbol. The symbols it names do not count
    towards its capitals: "AAPL, MSFT, NVDA rally" is a list of tickers, not shouting."""
    letters = [ch for word in _WORD.findall(text) if word not in dictionary for ch in word if ch.isalpha()]
    return len(letters) >= 12 and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)
