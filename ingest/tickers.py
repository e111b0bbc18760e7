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
- a bank whose analysts rate stocks (:data:`BROKERS`) is not tagged when its only role in the text is the actor of
  an analyst action on another company found in the same sentence: "Goldman Sachs upgrades Tesla", "JPMorgan
  raises its price target on Nvidia", "Tesla upgraded at Goldman", "Goldman Sachs analyst says Nvidia…", "Goldman
  and Morgan Stanley upgrade Apple", "Tesla gets Goldman upgrade", "Goldman Sachs says Tesla is a buy", "Goldman
  Sachs: Tesla shares could double", "Morgan Stanley: Tesla could double", "Morgan Stanley's Tesla price target",
  "Tesla shares jump on Goldman boost to price target", "Tesla: Goldman initiates at buy" tag the company acted on
  only, as their sentiment is about it. The bank stays when the text is about it ("Goldman Sachs beats estimates",
  "Goldman upgrades its own outlook", "Goldman Sachs says it will cut jobs", "Goldman Sachs: profit beats
  estimates": no company acted on), when it is a party to the company's news ("Goldman Sachs says Apple stock will
  join its employee fund": a forecast is a price move), when it is listed with the company ("Goldman Sachs and
  Apple shares fall"), when it appears again in another role, and when the company acted on is not in the
  dictionary (nothing else would carry the story).

Dictionary file (CSV): ``ticker,name,exchange,aliases[,exclude]``, aliases and excluded phrases
separated by ``|``.
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
# Separators of a list of companies: "Visa and Mastercard", "Exxon, Chevron".
_LIST_SEP = re.compile(r"\s*(?:,\s*and|,\s*or|,|/|&|and|or|vs\.?|versus)\s*")
_CAPITALISED_WORD = re.compile(r"(?<![\w'’-])[A-Z][\w'’.&-]*[ \t]+$")
_SENTENCE_END = frozenset(".!?;:|-–—(\"“'‘")

# Banks whose analysts rate other companies' stocks: in "Goldman Sachs upgrades Tesla" the news is about Tesla.
BROKERS = frozenset({"GS", "MS", "JPM", "BAC", "C", "WFC"})
# After the bank's name: its analysts ("Goldman Sachs analyst says…"), a rating action ("upgrades", "initiated"),
# or a change of target ("raises its price target on", "cuts … target"), the word target checked in the sentence.
# "Goldman Sachs upgraded by JPMorgan" is the other way round: Goldman is the company acted on.
_RATING = (r"(?:strong\s+)?(?:buy|sell|hold|neutral|overweight|underweight|outperform|underperform|equal[- ]weight|"
           r"(?:market|sector)\s+perform)(?![\w-])")
_DESK = r"(?i:^(?:['’]s)?(?:\s+(?:securities|research))?\s+"
_ACTIVE = r"\b(?!\s+(?:by|from)\b|\s+at\s+(?!(?:an?\s+)?" + _RATING + r")))"  # "initiates at buy" is active
_ANALYSTS = re.compile(_DESK + r"(?:analysts?|strategists?)\b)")
_RATING_ACTION = re.compile(_DESK + r"(?:(?:up|down)grade|initiate|reiterate|resume|reinstate|rate)[sd]?" + _ACTIVE)
# Each verb in every form, the plural too: "JPMorgan and Wells Fargo raise their price targets on Microsoft".
_TARGET_ACTION = re.compile(_DESK + r"(?:raise[sd]?|lift(?:s|ed)?|boost(?:s|ed)?|hike[sd]?|lower(?:s|ed)?|"
                                    r"trim(?:s|med)?|slash(?:es|ed)?|reduce[sd]?|cuts?)" + _ACTIVE)
# "target" as the noun a change of target needs, not the verb: "raises Nvidia target to $200", "lifts its price target
# on Apple", but not "JPMorgan lowers costs as Microsoft targets AI" (the bank's own news).
_TARGET_NOUN = re.compile(r"(?i:\btargets?\b(?=\s*(?:$|[,.;:!?)–—-]|(?:on|for|to|of|at|from|by|in|with|amid|after|"
                          r"as|ahead|following|despite|while|and|but)\b)))")
# Between the company and the bank: "Tesla upgraded to buy at Goldman", "Apple price target raised by Morgan Stanley".
_BY_BROKER = re.compile(r"(?i:\b(?:(?:up|down)grade[sd]?|initiated|reiterated|resumed|rated|"
                        r"target\s+(?:raised|lifted|boosted|hiked|lowered|trimmed|slashed|reduced|cut))\b.*"
                        r"\b(?:at|by|from)\s+$)")
# The bank's call on a company named next to it: "Tesla gets Goldman upgrade", "Morgan Stanley's Tesla price target",
# a change of target right after the bank, noun or verb ("Tesla jumps on Goldman boost to price target", "Tesla falls
# as Morgan Stanley cuts its price target", "Apple slips on Citi target cut"); the bank's own goals are no call
# ("Goldman boosts its own profit target", "Goldman cuts jobs target").
_CHANGE = r"(?:raise[sd]?|lift(?:s|ed)?|boost(?:s|ed)?|hike[sd]?|increase[sd]?|lower(?:s|ed)?|trim(?:s|med)?|" \
          r"slash(?:es|ed)?|reduce[sd]?|reduction|cuts?)"
_CALL = re.compile(r"(?i:(?:['’]s)?\s+(?:price\s+target|(?:up|down)grade|initiation|target\s+" + _CHANGE +
                   r"|" + _CHANGE + r"(?:\s+(?:to|in|of))?\s+(?:(?:its|their|the)\s+)?(?:price\s+)?targets?)\b)")
# The bank's view of the company after it: a rating ("Goldman Sachs says Tesla is a buy", "Goldman Sachs: Tesla is a
# buy", "… added to its conviction list") or a forecast of where it or its shares go, which only an analyst makes about
# another company ("Goldman Sachs: Tesla shares could double", "Morgan Stanley: Tesla could double", "JPMorgan: Amazon
# to hit $300"). News the bank is a party to stays: "Goldman Sachs: Apple card talks end", "Goldman Sachs says Apple
# stock will join its employee fund", "Goldman Sachs: Apple could drop card deal".
_SAYS = re.compile(r"(?i:\s*:\s+|\s+says?\s+)")
_VIEW = re.compile(r"(?i:\b(?:is|remains|as|at|rated|a)\s+(?:an?\s+)?" + _RATING +
                   r"|\b(?:top\s+picks?|conviction\s+(?:buy\s+)?list|model\s+portfolio)\b)")
_MOVE = (r"(?:(?:(?:continue\s+to|still)\s+)?(?:rise|fall|gain|climb|jump|surge|soar|rally|slide|slip|sink|drop|tumble|"
         r"plunge|slump|decline|rebound|recover|double|triple|halve|crash|outperform|underperform|lag|hit|reach|top|"
         r"be\s+worth|(?:go|head)\s+(?:higher|lower)|(?:see|have|offer)\s+(?:[\d.]+%\s+|more\s+|further\s+)?"
         r"(?:upside|downside))|(?:keep|continue)\s+(?:rising|falling|gaining|climbing|soaring|surging|rallying|"
         r"sliding|sinking|dropping|declining|outperforming))")
# A price move takes no object: "Tesla could double", "could fall 20%", "to hit $300", but "could double sales" or
# "could drop card deal" is the company's business.
_NO_OBJECT = (r"(?=\s*(?:$|[,.;:!?)–—-]|[$\d]|(?:further|more|again|sharply|higher|lower|by|to|on|after|as|in|this|"
              r"next|over|within|if|amid|before)\b))")
_FORECAST = re.compile(r"(?i:(?:['’]s)?(?:\s+(?:shares|stock))?\s+(?:could|may|might|will|would|should|can|to)\s+"
                       + _MOVE + _NO_OBJECT + ")")
# The company a headline is about, before the bank's action: "Tesla: Goldman initiates at buy".
_HEADLINE_SUBJECT = re.compile(r"\s*:\s+|\s+[-–—|]\s+")
_SENTENCE_BREAK = re.compile(r"[.!?;](?=\s|$)|\n")

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


_Hit = tuple[int, int, str]  # start, end, ticker


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
        hits = _without_acting_brokers(text, hits)
        ordered: list[str] = []
        for _, _, ticker in sorted(hits):
            if ticker not in ordered:
                ordered.append(ticker)
        return ordered

    def _cashtags(self, text: str) -> list[_Hit]:
        hits = []
        for match in _CASHTAG.finditer(text):
            raw = match.group(1)
            ticker = normalise_ticker(raw)
            # "$aapl" is fine for a known company; an unknown lower-case one is more likely noise.
            if ticker and (raw.isupper() or ticker in self.dictionary):
                hits.append((match.start(), match.end(), ticker))
        return hits

    def _prefixed(self, text: str) -> tuple[list[_Hit], list[tuple[int, int]]]:
        """Exchange-prefixed symbols, and the spans no other rule may read again ("(TSX: SAP)" is not SAP SE)."""
        hits: list[_Hit] = []
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

    def _company_names(self, text: str, hits: list[_Hit], masked: list[tuple[int, int]]) -> list[_Hit]:
        if self._names is None:
            return []
        blocked = masked + ([m.span() for m in self._excluded.finditer(text)] if self._excluded else [])
        found: list[_Hit] = []
        pending: list[_Hit] = []
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


def _names_company(text: str, hit: _Hit, others: list[_Hit]) -> bool:
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


def _without_acting_brokers(text: str, hits: list[_Hit]) -> list[_Hit]:
    """The hits less those of a broker whose every mention acts on another company ("Goldman upgrades Tesla")."""
    acting = {ticker for _, _, ticker in hits if ticker in BROKERS}
    if not acting:  # most texts: no copy of the hits
        return hits
    for hit in hits:
        if hit[2] in acting and not _acts_as_analyst(text, hit, hits):
            acting.discard(hit[2])
    return [hit for hit in hits if hit[2] not in acting]


def _acts_as_analyst(text: str, hit: _Hit, hits: list[_Hit]) -> bool:
    start, end, ticker = hit
    begin = max((m.end() for m in _SENTENCE_BREAK.finditer(text, 0, start)), default=0)
    stop = m.start() if (m := _SENTENCE_BREAK.search(text, end)) else len(text)
    end = _end_of_broker_list(text, end, hits)
    others = [(s, e) for s, e, t in hits if t != ticker and begin <= s and e <= stop and not start <= s < end]
    before = [e for _, e in others if e <= start]
    after = text[end:stop]
    if _ANALYSTS.match(after):
        return bool(others)
    if (_RATING_ACTION.match(after) or (_TARGET_ACTION.match(after) and _TARGET_NOUN.search(after))) and (
            any(s >= end for s, _ in others) or any(_HEADLINE_SUBJECT.fullmatch(text[e:start]) for e in before)):
        return True
    # "Tesla gets Goldman upgrade", but not "Apple and Goldman Sachs downgrade…", where both may be rated.
    if _CALL.match(after) and any(not _LIST_SEP.fullmatch(text[e:start]) for e in before):
        return True
    for s, e in others:
        if s >= end and (re.fullmatch(r"['’]s\s+", text[end:s]) and _CALL.match(text, e)
                         or _SAYS.fullmatch(text[end:s]) and (_VIEW.search(text, e, stop) or _FORECAST.match(text, e))):
            return True
    return any(_BY_BROKER.search(text[e:start]) for e in before)


def _end_of_broker_list(text: str, end: int, hits: list[_Hit]) -> int:
    """Where a list of banks that starts with this one ends: they act together in "Goldman and Morgan Stanley
    upgrade Apple". A list with another company in it ("Goldman Sachs and Apple shares fall") ends before it."""
    for s, e, t in sorted(hits):
        if s >= end and t in BROKERS and _LIST_SEP.fullmatch(text[end:s]):
            end = e
    return end


def _listed_with(text: str, hit: _Hit, others: list[_Hit]) -> bool:
    start, end, _ = hit
    return any(_LIST_SEP.fullmatch(text[o_end:start]) if o_end <= start else
               o_start >= end and _LIST_SEP.fullmatch(text[end:o_start])
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
