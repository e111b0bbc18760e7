"""Ticker extraction: cashtags, exchange prefixes, bare symbols and company names.

Precision first: a wrong ticker puts a document on the wrong dashboard. So
- cashtags (``$AAPL``, ``$BRK.B``) are trusted for any well-formed symbol, and so are exchange prefixes
  in the shape of a listing (``NASDAQ:AAPL``, ``(NYSE: KO)``); after ``NYSE: `` outside parentheses
  (a dateline: "NYSE: IT outage halts trading") the symbol must be in the dictionary and not a word;
- a non-US exchange (``(TSX: RY)``, ``LON:VOD``) tags the Yahoo-style symbol (``RY.TO``, ``VOD.L``) and
  never the US one: ``(TSX: SAP)`` is Saputo, not SAP SE;
- a bare upper-case symbol counts only when it is in the dictionary, has three letters or
  more, is not an English word or acronym (``ALL``, ``NOW``, ``CAT``…) and the text is not
  shouting in capitals;
- company names and aliases come from the dictionary file, matched case-sensitively on
  word boundaries, except inside the file's excluded phrases ("Big Apple", "Oracle of Omaha").
  An alias written ``~Target`` is ambiguous and needs a company signal next to it: a suffix or
  the company's shares after it ("Target Corp", "Zoom's CEO", "Target stock"), a company noun
  before it ("retailer Target", "stake in Oracle"), its own symbol in the text ("Zoom (ZM)"), or
  another company listed with it ("Visa and Mastercard"). Failing those, a market word in the text
  suffices for a capital mid-sentence ("Investors cheer Caterpillar cost cuts"); where every word
  is capitalised anyway (a sentence's first word, a Title-Case Headline) the name must also be
  followed by what companies do ("Ford recalls…; shares slip"). A name hyphenated ("Meta-analysis")
  or after another capitalised word ("Harrison Ford") needs one of the signals above.
- a bank whose analysts rate stocks is dropped when it only acts as an analyst on another company in the same
  sentence ("Goldman Sachs upgrades Tesla" tags TSLA only): :mod:`ingest.brokers` has that policy.

Dictionary file (CSV): ``ticker,name,exchange,aliases[,exclude]``, aliases and excluded phrases
separated by ``|``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ingest.brokers import without_acting_brokers
from ingest.ticker_hits import LIST_SEP, Hit

_WORD = re.compile(r"[^\W\d_]+")  # runs of letters
_TICKER = re.compile(r"^[A-Z][A-Z0-9]{0,9}(?:\.[A-Z0-9]{1,4})?$")
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.\-/][A-Za-z]{1,2})?)(?![\w$])")

# Non-US exchange → the Yahoo-style suffix its symbols get ("TSX: RY" → RY.TO): such a symbol names another
# company than the US one ("TSX: SAP" is Saputo, not SAP SE), so it gets a window of its own. "" = recognised
# but no suffix is agreed (TSE is Tokyo or Toronto): tag nothing.
FOREIGN_EXCHANGES = {
    "TSX": "TO", "TSXV": "V", "TSX-V": "V", "CVE": "V", "CSE": "CN", "NEO": "NE", "LON": "L", "LSE": "L",
    "ASX": "AX", "NZX": "NZ", "HKEX": "HK", "HKG": "HK", "SEHK": "HK", "TYO": "T", "TSE": "", "KRX": "KS",
    "FRA": "F", "ETR": "DE", "XETRA": "DE", "EPA": "PA", "AMS": "AS", "EBR": "BR", "ELI": "LS", "BIT": "MI",
    "BME": "MC", "EURONEXT": "", "STO": "ST", "HEL": "HE", "CPH": "CO", "OSL": "OL", "SWX": "SW", "SIX": "SW",
    "VIE": "VI", "WSE": "WA", "TASE": "TA", "NSE": "NS", "BSE": "BO", "SGX": "SI", "JSE": "JO", "BMV": "MX",
    "BVMF": "SA", "SHA": "SS", "SHE": "SZ", "TWSE": "TW", "TPE": "TW", "IDX": "JK",
}
_FOREIGN = "|".join(re.escape(code) for code in sorted(FOREIGN_EXCHANGES, key=len, reverse=True))
# US names in any case ("Nasdaq"); foreign codes upper-case only, as several are words ("She", "Six").
_PREFIXED = re.compile(
    r"(?:(?P<open>[(\[])\s*)?(?<![\w.\-])"
    r"(?P<exchange>(?i:nasdaq|nysearca|nyse\s?american|nyse\s?mkt|nyse|amex|bats|cboe|otcmkts|otcqx|otc)"
    r"|Xetra|Euronext|" + _FOREIGN + r")"
    r"(?P<sep>\s?:\s?)\$?(?P<symbol>[A-Z][A-Z0-9]{0,5}(?:[.\-/][A-Z]{1,2})?)(?![\w])"
)
_BARE = re.compile(r"(?<![\w$&.:/-])([A-Z]{3,5}(?:\.[A-Z])?)(?![\w&-])")
_CONTEXT = re.compile(
    r"(?i)\b(?:shares?|stocks?|earnings|revenues?|profits?|sales|quarter(?:ly)?|ceo|cfo|investors?|"
    r"analysts?|dividends?|guidance|inc|corp|co|ltd|plc|market|valuation|ipo|acquisitions?|acquires?|"
    r"merger|deal|price target|upgraded?|downgraded?|buybacks?|outlook|results|nasdaq|nyse|stake|"
    r"layoffs|forecasts?|margins?|subscribers|customers|payments|rall(?:y|ied|ies)|slump(?:s|ed)?|"
    r"wall street|traders?|bonds?|bank|rating|regulators?|lawsuit|contract|orders|deliveries)\b"
)
# Company signals right next to an ambiguous name: a corporate suffix, the company's shares or people after it
# ("Zoom's shares", "Target stock"), a company noun before it ("retailer Target", "stake in Oracle").
_COMPANY_AFTER = re.compile(
    r"\s+(?:Inc|Corp|Corporation|Co|Company|Ltd|plc|LLC|Group|Holdings|SE|AG|NV)\b\.?(?![\w-])"
    r"|(?i:['’]s\s+(?:shares|stock|ceo|cfo|chief|boss|board|investors|shareholders|earnings|results|revenue|sales|"
    r"profits?|outlook|guidance|forecast|stores|stake|dividend|quarterly|executives?|market value|valuation)\b)"
    r"|(?i:\s+(?:shares|stock|earnings|revenue|sales|profits?|results|ceo|cfo|executives|dividend|q[1-4])\b)"
)
_COMPANY_BEFORE = re.compile(
    r"(?i:\b(?:retailer|automaker|carmaker|drugmaker|chipmaker|lender|insurer|company|firm|giant|rival|"
    r"shares (?:of|in)|stake in|stock of|investors in|shareholders (?:of|in)|analysts at|"
    r"(?:ceo|chief executive|boss) of|acquisition of|takeover of|bid for)\s+)$"
)
# A name as the subject of what companies do: "Ford recalls", "Oracle faces", "Target to close".
_VERB_AFTER = re.compile(
    r"(?i:\s+(?:jumps|rises|climbs|soars|surges|rallies|gains|falls|drops|slides|slips|sinks|tumbles|plunges|"
    r"slumps|dips|beats|misses|tops|reports|posts|raises|cuts|lifts|lowers|trims|boosts|warns|recalls|sues|"
    r"wins|loses|signs|agrees|buys|sells|acquires|launches|unveils|announces|hires|appoints|names|lays|plans|"
    r"expands|closes|settles|pays|hikes|says|files|forecasts|expects|sees|delays|halts|faces|suspends|resumes|"
    r"scraps|ends|extends|confirms|denies|seeks|weighs|considers|completes|invests|bets|issues|"
    r"to (?:buy|sell|cut|close|open|acquire|raise|pay|launch|merge|exit|lay|spin))\b)"
)
_CAPITALISED_WORD = re.compile(r"(?<![\w'’-])[A-Z][\w'’.&-]*[ \t]+$")
_SENTENCE_END = frozenset(".!?;:|-–—(\"“'‘")

# Symbols that are also words or acronyms: they need a cashtag or a listing-shaped exchange prefix.
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
    excluded: tuple[str, ...] = ()  # phrases with an alias in them that name something else


class TickerDictionary:
    """Tickers and their company names; the shipped file lists the largest US-listed companies."""

    def __init__(self, companies: list[Company]) -> None:
        self.companies = {c.ticker: c for c in companies}
        self.alias_to_ticker: dict[str, str] = {}
        self.ambiguous: set[str] = set()
        self.excluded = sorted({phrase for company in companies for phrase in company.excluded}, key=len, reverse=True)
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
            excluded = tuple(p.strip() for p in (row.get("exclude") or "").split("|") if p.strip())
            companies.append(Company(ticker, (row.get("name") or "").strip(), (row.get("exchange") or "").strip(),
                                     aliases, excluded))
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
        self._excluded = (
            re.compile(r"(?i)(?<!\w)(?:" + "|".join(re.escape(p) for p in dictionary.excluded) + r")(?!\w)")
            if dictionary.excluded else None
        )

    def extract(self, text: str) -> list[str]:
        hits = self._cashtags(text)
        prefixed, masked = self._prefixed(text)
        hits += prefixed
        if not _shouting(text, self.dictionary):
            hits += [(m.start(), m.end(), m.group(1)) for m in _BARE.finditer(text)
                     if m.group(1) in self.dictionary and m.group(1) not in COMMON_WORDS
                     and not _overlaps(masked, m.start(), m.end())]
        hits += self._company_names(text, hits, masked)
        hits = without_acting_brokers(text, hits)
        ordered: list[str] = []
        for _, _, ticker in sorted(hits):
            if ticker not in ordered:
                ordered.append(ticker)
        return ordered

    def _cashtags(self, text: str) -> list[Hit]:
        hits = []
        for match in _CASHTAG.finditer(text):
            raw = match.group(1)
            ticker = normalise_ticker(raw)
            # "$aapl" is fine for a known company; an unknown lower-case one is more likely noise.
            if ticker and (raw.isupper() or ticker in self.dictionary):
                hits.append((match.start(), match.end(), ticker))
        return hits

    def _prefixed(self, text: str) -> tuple[list[Hit], list[tuple[int, int]]]:
        """Exchange-prefixed symbols, and the spans no other rule may read again ("(TSX: SAP)" is not SAP SE)."""
        hits: list[Hit] = []
        masked: list[tuple[int, int]] = []
        for match in _PREFIXED.finditer(text):
            exchange = re.sub(r"\s+", " ", match.group("exchange")).upper()
            # "(NYSE: KO)" and "NYSE:KO" are listings; "NYSE: IT outage" is a dateline before a sentence.
            listing = match.group("open") is not None or match.group("sep") == ":"
            ticker = normalise_ticker(match.group("symbol"))
            if exchange in FOREIGN_EXCHANGES:
                masked.append(match.span())
                suffix = FOREIGN_EXCHANGES[exchange]
                ticker = normalise_ticker(f"{ticker}.{suffix}") if ticker and suffix and listing else None
            elif listing:
                masked.append(match.span())
            elif ticker not in self.dictionary or ticker in COMMON_WORDS:
                continue
            if ticker:
                hits.append((match.start(), match.end(), ticker))
        return hits, masked

    def _company_names(self, text: str, hits: list[Hit], masked: list[tuple[int, int]]) -> list[Hit]:
        if self._names is None:
            return []
        blocked = masked + ([m.span() for m in self._excluded.finditer(text)] if self._excluded else [])
        found: list[Hit] = []
        pending: list[Hit] = []
        for match in self._names.finditer(text):
            if _overlaps(blocked, match.start(), match.end()):
                continue
            alias = match.group(1)
            hit = (match.start(), match.end(), self.dictionary.alias_to_ticker[alias])
            (pending if alias in self.dictionary.ambiguous else found).append(hit)
        # An ambiguous name listed beside one accepted before may be accepted in turn: "Ford, GM and Tesla".
        while accepted := [hit for hit in pending if _names_company(text, hit, hits + found)]:
            found += accepted
            pending = [hit for hit in pending if hit not in accepted]
        return found


def _names_company(text: str, hit: Hit, others: list[Hit]) -> bool:
    """Whether an ambiguous name ("Target", "Zoom", "Ford") is the company here: it needs a signal next to it,
    since almost every headline has a market word somewhere ("Investors Target Beaten-Down Tech Shares")."""
    start, end, ticker = hit
    before, after = text[max(0, start - 40):start], text[end:end + 40]
    if after[:1] == "-":  # "Meta-analysis", "Target-date fund"
        return False
    if any(other[2] == ticker for other in others) or re.search(rf"\(\s*\$?{re.escape(ticker)}\s*\)", text):
        return True  # its own symbol: "Zoom (ZM)", "$TGT"
    if _COMPANY_AFTER.match(after) or _COMPANY_BEFORE.search(before):
        return True
    if _CAPITALISED_WORD.search(before) and not _sentence_start(text, start):
        return False  # part of a longer name: "Harrison Ford", "H-1B Visa", "Investors Target"
    if _listed_with(text, hit, others):
        return True
    return _weak_evidence(text, start, end)


def _listed_with(text: str, hit: Hit, others: list[Hit]) -> bool:
    start, end, _ = hit
    return any(LIST_SEP.fullmatch(text[o_end:start]) if o_end <= start else
               o_start >= end and LIST_SEP.fullmatch(text[end:o_start])
               for o_start, o_end, _ in others)


def _weak_evidence(text: str, start: int, end: int) -> bool:
    """A market word anywhere in the text, the old rule, is weak: most headlines have one. It suffices for a
    capital mid-sentence, which marks a proper noun ("Investors cheer Caterpillar cost cuts"). At the start of a
    sentence, or in a title-case line, every word is capitalised, so the name must also act like a company:
    "Ford recalls 90,000 pickups; shares slip", but not "Stocks Zoom Higher; Traders Cheer"."""
    if not _CONTEXT.search(text):
        return False
    if _sentence_start(text, start) or _title_case(_line(text, start)):
        return bool(_VERB_AFTER.match(text, end))
    return True


def _sentence_start(text: str, start: int) -> bool:
    before = text[max(0, start - 20):start]
    last = before[before.rfind("\n") + 1:].rstrip()[-1:]  # a new line (title, then body) starts a sentence
    return last == "" or last in _SENTENCE_END


def _line(text: str, pos: int) -> str:
    end = text.find("\n", pos)
    return text[text.rfind("\n", 0, pos) + 1:end if end >= 0 else len(text)]


def _title_case(line: str) -> bool:
    """A headline with Every Word Capitalised; short words (as, of, the) are left out of the count."""
    words = [w for w in _WORD.findall(line) if len(w) >= 4]
    return len(words) >= 3 and sum(w[0].isupper() for w in words) >= 0.75 * len(words)


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


def _shouting(text: str, dictionary: TickerDictionary) -> bool:
    """A text in capitals, where any word may look like a symbol. The symbols it names do not count
    towards its capitals: "AAPL, MSFT, NVDA rally" is a list of tickers, not shouting."""
    letters = [ch for word in _WORD.findall(text) if word not in dictionary for ch in word if ch.isalpha()]
    return len(letters) >= 12 and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)
