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

Each rule reads the text a fixed number of times, and each mention reads its neighbours, found by bisection: a text
that repeats a headline n times takes O(n log n). (Every ambiguous name read every hit and the whole text, round after
round, and every name and symbol every listing: "Investors eye Target" 2,000 times took seconds.)
"""

from __future__ import annotations

import csv
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ingest.brokers import without_acting_brokers
from ingest.ticker_hits import LIST_GAP, LIST_SEP, Hit

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
# A symbol in parentheses: "Zoom (ZM)", "($TGT)".
_IN_PARENTHESES = re.compile(r"\(\s*\$?([^\s()$]+)\s*\)")
_NEWLINE = re.compile("\n")
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
        prefixed, listings = self._prefixed(text)
        hits += prefixed
        masked = _Spans(listings)
        if not _shouting(text, self.dictionary):
            hits += [(m.start(), m.end(), m.group(1)) for m in _BARE.finditer(text)
                     if m.group(1) in self.dictionary and m.group(1) not in COMMON_WORDS
                     and not masked.overlap(m.start(), m.end())]
        hits += self._company_names(text, hits, masked)
        hits = without_acting_brokers(text, hits)
        return list(dict.fromkeys(ticker for _, _, ticker in sorted(hits)))

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

    def _company_names(self, text: str, hits: list[Hit], masked: _Spans) -> list[Hit]:
        if self._names is None:
            return []
        excluded = _Spans([m.span() for m in self._excluded.finditer(text)] if self._excluded else [])
        found: list[Hit] = []
        pending: list[Hit] = []
        for match in self._names.finditer(text):
            if masked.overlap(match.start(), match.end()) or excluded.overlap(match.start(), match.end()):
                continue
            alias = match.group(1)
            hit = (match.start(), match.end(), self.dictionary.alias_to_ticker[alias])
            (pending if alias in self.dictionary.ambiguous else found).append(hit)
        if not pending:
            return found
        return found + _ambiguous_names(text, pending, hits + found)


def _ambiguous_names(text: str, pending: list[Hit], others: list[Hit]) -> list[Hit]:
    """The ambiguous names (``pending``, in text order) that name the company, beside the ``others`` found.

    A name needs a signal next to it, since almost every headline has a market word somewhere ("Investors Target
    Beaten-Down Tech Shares"). One listed beside a name accepted in a round, or of the same company, is accepted in the
    next: "Ford, GM and Tesla". Each name is judged once from what is next to it (what it reads of the whole text is
    found once per text) and again only when a neighbour or its company is accepted, so the rounds are linear in the
    mentions; judging every name against every hit, round after round, took seconds for a headline repeated 2,000
    times. The names come back round by round, each round in text order.
    """
    signals = _TextSignals(text)
    known = {ticker for _, _, ticker in others}
    accepted: list[int] = []  # indices into pending
    waiting: dict[int, bool] = {}  # index → whether a company listed beside it would do
    for i, (start, end, ticker) in enumerate(pending):
        before, after = text[max(0, start - 40):start], text[end:end + 40]
        if after[:1] == "-":  # "Meta-analysis", "Target-date fund"
            continue
        if (ticker in known or signals.in_parentheses(ticker)  # its own symbol: "Zoom (ZM)", "$TGT"
                or _COMPANY_AFTER.match(after) or _COMPANY_BEFORE.search(before)):
            accepted.append(i)
        elif _CAPITALISED_WORD.search(before) and not _sentence_start(text, start):
            waiting[i] = False  # part of a longer name ("Harrison Ford", "H-1B Visa"): only its own symbol will do
        elif signals.weak_evidence(start, end):
            accepted.append(i)
        else:
            waiting[i] = True
    if not waiting:
        return [pending[i] for i in accepted]
    neighbours = _Neighbours(text, others, pending)
    accepted += [i for i, listable in waiting.items() if listable and neighbours.beside_others(i)]
    by_ticker: dict[str, list[int]] = {}
    for i in waiting:
        by_ticker.setdefault(pending[i][2], []).append(i)
    names, newly = [], sorted(accepted)
    while newly:
        names += newly
        for i in newly:
            waiting.pop(i, None)
        following: set[int] = set()
        for i in newly:  # what this round's names let in: the names of their companies, and those listed beside them
            if pending[i][2] not in known:
                known.add(pending[i][2])
                following.update(j for j in by_ticker.get(pending[i][2], ()) if j in waiting)
            following.update(j for j in neighbours.of(i) if waiting.get(j))
        newly = sorted(following)
    return [pending[i] for i in names]


class _TextSignals:
    """What the ambiguous names of one text read of the whole text, each found at most once: the symbols in
    parentheses, whether it has a market word, and which of its lines are in title case."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._symbols: set[str] | None = None
        self._market_word: bool | None = None
        self._newlines: list[int] | None = None
        self._title_case: dict[int, bool] = {}  # line number → whether in title case

    def in_parentheses(self, ticker: str) -> bool:
        if self._symbols is None:
            self._symbols = {m.group(1) for m in _IN_PARENTHESES.finditer(self.text)}
        return ticker in self._symbols

    def weak_evidence(self, start: int, end: int) -> bool:
        """A market word anywhere in the text, the old rule, is weak: most headlines have one. It suffices for a
        capital mid-sentence, which marks a proper noun ("Investors cheer Caterpillar cost cuts"). At the start of a
        sentence, or in a title-case line, every word is capitalised, so the name must also act like a company:
        "Ford recalls 90,000 pickups; shares slip", but not "Stocks Zoom Higher; Traders Cheer"."""
        if self._market_word is None:
            self._market_word = _CONTEXT.search(self.text) is not None
        if not self._market_word:
            return False
        if _sentence_start(self.text, start) or self._in_title_case(start):
            return bool(_VERB_AFTER.match(self.text, end))
        return True

    def _in_title_case(self, pos: int) -> bool:
        if self._newlines is None:
            self._newlines = [m.start() for m in _NEWLINE.finditer(self.text)]
        line = bisect_left(self._newlines, pos)  # the first new line at or after pos ends its line
        if line not in self._title_case:
            start = self._newlines[line - 1] + 1 if line else 0
            end = self._newlines[line] if line < len(self._newlines) else len(self.text)
            self._title_case[line] = _title_case(self.text[start:end])
        return self._title_case[line]


class _Neighbours:
    """Which ambiguous names are listed beside which hits ("Visa and Mastercard", "Exxon, Chevron"): each hit reads
    the hits that start in the run of separator characters after it (LIST_GAP), found by bisection. As a hit has a
    character no separator has (a capital, "$"), at most one of each rule's hits starts in a run and goes past it."""

    def __init__(self, text: str, others: list[Hit], pending: list[Hit]) -> None:
        spans = sorted([(s, e, i) for i, (s, e, _) in enumerate(pending)] + [(s, e, -1) for s, e, _ in others])
        starts = [s for s, _, _ in spans]
        self._pending: dict[int, list[int]] = {}  # a pending name → the pending names listed beside it
        self._beside_others: set[int] = set()
        for _, end, i in spans:
            reach = LIST_GAP.match(text, end).end()
            k = bisect_left(starts, end)
            while k < len(spans) and starts[k] <= reach:
                start, _, j = spans[k]
                if (i >= 0 or j >= 0) and LIST_SEP.fullmatch(text, end, start):
                    if i >= 0 and j >= 0:
                        self._pending.setdefault(i, []).append(j)
                        self._pending.setdefault(j, []).append(i)
                    else:
                        self._beside_others.add(max(i, j))
                k += 1

    def beside_others(self, i: int) -> bool:
        return i in self._beside_others

    def of(self, i: int) -> list[int]:
        return self._pending.get(i, [])


class _Spans:
    """Spans that do not overlap, in order, as one ``finditer`` gives them: whether a hit overlaps one is a
    bisection."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self._starts = [s for s, _ in spans]
        self._ends = [e for _, e in spans]  # in order too, as the spans do not overlap

    def overlap(self, start: int, end: int) -> bool:
        i = bisect_right(self._ends, start)  # the first span that ends after start
        return i < len(self._starts) and self._starts[i] < end


def _sentence_start(text: str, start: int) -> bool:
    before = text[max(0, start - 20):start]
    last = before[before.rfind("\n") + 1:].rstrip()[-1:]  # a new line (title, then body) starts a sentence
    return last == "" or last in _SENTENCE_END


def _title_case(line: str) -> bool:
    """A headline with Every Word Capitalised; short words (as, of, the) are left out of the count."""
    words = [w for w in _WORD.findall(line) if len(w) >= 4]
    return len(words) >= 3 and sum(w[0].isupper() for w in words) >= 0.75 * len(words)


def _shouting(text: str, dictionary: TickerDictionary) -> bool:
    """A text in capitals, where any word may look like a symbol. The symbols it names do not count
    towards its capitals: "AAPL, MSFT, NVDA rally" is a list of tickers, not shouting."""
    letters = [ch for word in _WORD.findall(text) if word not in dictionary for ch in word if ch.isalpha()]
    return len(letters) >= 12 and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)
