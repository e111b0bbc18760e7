"""The broker pass of ticker extraction: a bank whose analysts rate stocks is left out when it only acts as one.

A bank in :data:`BROKERS` is also a listed company, so "Goldman Sachs upgrades Tesla" names two tickers, but its
sentiment is about Tesla alone: tagging GS too would put the bank on a dashboard for news that is not its own. So
the bank is dropped when its only role in the text is the actor of an analyst action on another company found in
the same sentence: "Goldman Sachs upgrades Tesla", "JPMorgan raises its price target on Nvidia", "Tesla upgraded at
Goldman", "Goldman Sachs analyst says Nvidia…", "Goldman and Morgan Stanley upgrade Apple", "Tesla gets Goldman
upgrade", "Goldman Sachs says Tesla is a buy", "Goldman Sachs: Tesla shares could double", "Morgan Stanley: Tesla
could double", "Morgan Stanley's Tesla price target", "Tesla shares jump on Goldman boost to price target", "Tesla:
Goldman initiates at buy" tag the company acted on only.

The bank stays when the text is about it ("Goldman Sachs beats estimates", "Goldman upgrades its own outlook",
"Goldman Sachs says it will cut jobs", "Goldman Sachs: profit beats estimates": no company acted on), when it is a
party to the company's news ("Goldman Sachs says Apple stock will join its employee fund": a forecast is a price
move), when it is listed with the company ("Goldman Sachs and Apple shares fall"), when it appears again in another
role, and when the company acted on is not in the dictionary (nothing else would carry the story).

The pass runs last in :meth:`ingest.tickers.TickerExtractor.extract`, on the text and the hits the other rules found
in it: the company acted on must be one of them. It sorts the hits and finds the sentence breaks once per text, so
each mention is judged from its neighbours: a text that repeats "Goldman Sachs upgrades Tesla" n times, in one
sentence or in n, takes O(n log n), where reading every hit for every mention took O(n²).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from ingest.ticker_hits import LIST_GAP, LIST_SEP, Hit

# Banks whose analysts rate other companies' stocks: in "Goldman Sachs upgrades Tesla" the news is about Tesla.
BROKERS = frozenset({"GS", "MS", "JPM", "BAC", "C", "WFC"})
# After the bank's name: its analysts ("Goldman Sachs analyst says…"), a rating action ("upgrades", "initiated"),
# or a change of target ("raises its price target on", "cuts … target"), the word target checked in the sentence.
# "Goldman Sachs upgraded by JPMorgan" is the other way round: Goldman is the company acted on.
_RATING = (r"(?:strong\s+)?(?:buy|sell|hold|neutral|overweight|underweight|outperform|underperform|equal[- ]weight|"
           r"(?:market|sector)\s+perform)(?![\w-])")
_DESK = r"(?i:(?:['’]s)?(?:\s+(?:securities|research))?\s+"  # matched at the bank's end: match(text, pos)
_ACTIVE = r"\b(?!\s+(?:by|from)\b|\s+at\s+(?!(?:an?\s+)?" + _RATING + r")))"  # "initiates at buy" is active
_ANALYSTS = re.compile(_DESK + r"(?:analysts?|strategists?)\b)")
_RATING_ACTION = re.compile(_DESK + r"(?:(?:up|down)grade|initiate|reiterate|resume|reinstate|rate)[sd]?" + _ACTIVE)
# Each verb in every form, the plural too: "JPMorgan and Wells Fargo raise their price targets on Microsoft".
_TARGET_VERB = (r"(?:raise[sd]?|lift(?:s|ed)?|boost(?:s|ed)?|hike[sd]?|lower(?:s|ed)?|trim(?:s|med)?|slash(?:es|ed)?|"
                r"reduce[sd]?|cuts?)")
_TARGET_ACTION = re.compile(_DESK + _TARGET_VERB + _ACTIVE)
# "target" as the noun a change of target needs, not the verb: "raises Nvidia target to $200", "lifts its price target
# on Apple", but not "JPMorgan lowers costs as Microsoft targets AI" (the bank's own news).
_TARGET_NOUN = re.compile(r"(?i:\btargets?\b(?=\s*(?:$|[,.;:!?)–—-]|(?:on|for|to|of|at|from|by|in|with|amid|after|"
                          r"as|ahead|following|despite|while|and|but)\b)))")
# Between the company and the bank: "Tesla upgraded to buy at Goldman", "Apple price target raised by Morgan Stanley".
_PASSIVE = (r"\b(?:(?:up|down)grade[sd]?|initiated|reiterated|resumed|rated|"
            r"target\s+(?:raised|lifted|boosted|hiked|lowered|trimmed|slashed|reduced|cut))\b")
_BY = r"\b(?:at|by|from)\s+"
_BY_BROKER = re.compile(f"(?i:{_PASSIVE}.*{_BY}$)")
_PASSIVE_ACTION, _BY_BEFORE = re.compile(f"(?i:{_PASSIVE})"), re.compile(f"(?i:{_BY})")
# The bank's call on a company named next to it: "Tesla gets Goldman upgrade", "Morgan Stanley's Tesla price target",
# a change of target right after the bank, noun or verb ("Tesla jumps on Goldman boost to price target", "Tesla falls
# as Morgan Stanley cuts its price target", "Apple slips on Citi target cut"); the bank's own goals are no call
# ("Goldman boosts its own profit target", "Goldman cuts jobs target").
_CHANGE = r"(?:" + _TARGET_VERB + r"|increase[sd]?|reduction)"  # and the nouns: "Citi target cut", "boost to"
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
# The characters of the gaps that join a mention to its neighbour (beside LIST_GAP, those of a list): "'s " or " says "
# or ": " before the company, ": " or " - " after a headline's subject. A neighbour past a run of them is not joined.
_SAYS_GAP = re.compile(r"(?i:[\s:'’say]*)")
_SUBJECT_GAP = re.compile(r"[\s:|–—-]")
_SPACE, _WORD_CHAR = re.compile(r"\s"), re.compile(r"\w")


def without_acting_brokers(text: str, hits: list[Hit]) -> list[Hit]:
    """The hits less those of a broker whose every mention acts on another company ("Goldman upgrades Tesla")."""
    acting = {ticker for _, _, ticker in hits if ticker in BROKERS}
    if not acting:  # most texts: no copy of the hits
        return hits
    mentions = _Mentions(text, hits)
    for hit in hits:
        if hit[2] in acting and not mentions.acts_as_analyst(hit):
            acting.discard(hit[2])
    return [hit for hit in hits if hit[2] not in acting]


class _Mentions:
    """The hits of one text sorted by start and by end, and its sentence breaks: what each check reads."""

    def __init__(self, text: str, hits: list[Hit]) -> None:
        self.text = text
        self.by_start = sorted(hits)
        self.starts = [s for s, _, _ in self.by_start]
        self.by_end = sorted(hits, key=lambda hit: (hit[1], hit[0], hit[2]))
        self.ends = [e for _, e, _ in self.by_end]
        # Past a run of one ticker's hits at once: a text naming one bank a thousand times has no other company.
        self.start_skip, self.end_skip = _run_ends(self.by_start), _run_ends(self.by_end)
        self.brokers = [hit for hit in self.by_start if hit[2] in BROKERS]
        self.broker_starts = [s for s, _, _ in self.brokers]
        # A hit that ends inside a word: a search from its end reads a word boundary there that the text lacks.
        self.glued = [hit for hit in self.by_end if _glued(text, hit[1])]
        self.breaks = [m.start() for m in _SENTENCE_BREAK.finditer(text)]
        self._found: dict[tuple[re.Pattern, int], list[int]] = {}
        self._list_ends: dict[int, int] = {}
        self._passive: tuple[list[int], list[int]] | None = None

    def acts_as_analyst(self, hit: Hit) -> bool:
        """Whether this mention of a bank is an analyst's action on another company of the hits in its sentence (the
        banks listed with it, "Goldman and Morgan Stanley", act as one). It is when, after the mention (or the list),

        - its analysts speak and another company is in the sentence ("Goldman Sachs analyst says Nvidia…");
        - a rating action or a change of target follows, and a company comes after it or heads the headline ("Goldman
          upgrades Tesla", "Tesla: Goldman initiates at buy");
        - its call follows, and a company not listed with the bank comes before ("Tesla gets Goldman upgrade");
        - a company follows as the object of its call or view ("Morgan Stanley's Tesla price target", "Goldman Sachs
          says Tesla is a buy", "Morgan Stanley: Tesla could double");

        or when the action stands before the mention, on a company before that ("Tesla upgraded at Goldman"). The
        other companies are those of other tickers in the sentence, outside the list."""
        text = self.text
        start, end, ticker = hit
        begin, stop = self._sentence(start, end)
        end = self._end_of_broker_list(end)
        if _ANALYSTS.match(text, end, stop):
            return any(self._others_from(ticker, begin, start, stop)) or any(self._others_from(ticker, end, stop, stop))
        if (_RATING_ACTION.match(text, end, stop) or (_TARGET_ACTION.match(text, end, stop)
                                                      and self._found_from(_TARGET_NOUN, end, stop))) and (
                any(self._others_from(ticker, end, stop, stop)) or self._headline_subject_before(ticker, begin, start)):
            return True
        # "Tesla gets Goldman upgrade", but not "Apple and Goldman Sachs downgrade…", where both may be rated. Those
        # listed with the bank end right before it, so the first of the others decides, or one of the last few.
        if _CALL.match(text, end, stop) and any(not LIST_SEP.fullmatch(text, e, start)
                                               for _, e in self._others_ending(ticker, begin, begin, start)):
            return True
        for s, e in self._others_from(ticker, end, _SAYS_GAP.match(text, end).end() + 1, stop):
            if (re.fullmatch(r"['’]s\s+", text[end:s]) and _CALL.match(text, e)
                    or _SAYS.fullmatch(text[end:s]) and (self._found_from(_VIEW, e, stop) or _FORECAST.match(text, e))):
                return True
        return self._acted_on_before(ticker, begin, start)

    def _sentence(self, start: int, end: int) -> tuple[int, int]:
        """Where the sentence of text[start:end] begins (after the last break before it, or a full stop right before
        it: as the end of ``text[:start]`` reads it) and where it stops (at the first break from ``end``)."""
        if start > 0 and self.text[start - 1] in ".!?;":
            begin = start
        else:
            i = bisect_right(self.breaks, start - 1)
            begin = self.breaks[i - 1] + 1 if i else 0
        i = bisect_left(self.breaks, end)
        return begin, self.breaks[i] if i < len(self.breaks) else len(self.text)

    def _end_of_broker_list(self, end: int) -> int:
        """Where a list of banks that starts with this one ends: they act together in "Goldman and Morgan Stanley
        upgrade Apple". A list with another company in it ("Goldman Sachs and Apple shares fall") ends before it.
        Each bank's list goes on as the next one's does, so each list is walked once, not once for each of its banks."""
        walked = []
        while end not in self._list_ends and (joined := self._next_in_list(end)) is not None:
            walked.append(end)
            end = joined
        last = self._list_ends.setdefault(end, end)
        self._list_ends.update(dict.fromkeys(walked, last))
        return last

    def _next_in_list(self, end: int) -> int | None:
        """The end of the first bank joined to text[:end] by a separator ("and", ", "), if one is."""
        reach = LIST_GAP.match(self.text, end).end()  # a bank further on is not joined by a separator
        i = bisect_left(self.broker_starts, end)
        while i < len(self.brokers) and self.brokers[i][0] <= reach:
            s, e, _ = self.brokers[i]
            if LIST_SEP.fullmatch(self.text, end, s):
                return e
            i += 1
        return None

    def _others_from(self, ticker: str, lo: int, hi: int, stop: int) -> Iterator[tuple[int, int]]:
        """The spans of hits of other tickers that start in [lo, hi) and end by ``stop``, in order."""
        i = bisect_left(self.starts, lo)
        while i < len(self.by_start) and self.starts[i] < hi:
            s, e, t = self.by_start[i]
            if t == ticker:
                i = self.start_skip[i]
                continue
            if e <= stop:
                yield s, e
            i += 1

    def _others_ending(self, ticker: str, begin: int, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """The spans of hits of other tickers that start from ``begin`` and end in [lo, hi], in order of end."""
        i = bisect_left(self.ends, lo)
        while i < len(self.by_end) and self.ends[i] <= hi:
            s, e, t = self.by_end[i]
            if t == ticker:
                i = self.end_skip[i]
                continue
            if s >= begin:
                yield s, e
            i += 1

    def _headline_subject_before(self, ticker: str, begin: int, start: int) -> bool:
        """Whether a company heads the headline the mention is in: "Tesla: Goldman initiates at buy"."""
        lo = start
        while lo > begin and _SUBJECT_GAP.match(self.text, lo - 1):
            lo -= 1
        return any(_HEADLINE_SUBJECT.fullmatch(self.text, e, start) for _, e in self._others_ending(ticker, begin, lo,
                                                                                                    start))

    def _acted_on_before(self, ticker: str, begin: int, start: int) -> bool:
        """Whether a company before the mention is acted on by it: "Tesla upgraded at Goldman", a passive action after
        the company and "at", "by" or "from" right before the bank."""
        by = self._by_before(begin, start)
        if by is None:
            return False
        i = bisect_left(self.glued, begin, key=lambda hit: hit[1])
        while i < len(self.glued) and self.glued[i][1] <= start:
            s, e, t = self.glued[i]
            if t != ticker and s >= begin and _BY_BROKER.search(self.text[e:start]):
                return True
            i += 1
        # Past the first company (a glued one had every action after it read above): an action that ends before the
        # "by" is after some company before it.
        first = next((e for _, e in self._others_ending(ticker, begin, begin, start)), None)
        if first is None:
            return False
        starts, least_ends = self._passive_actions()
        i = bisect_left(starts, first)
        return i < len(starts) and least_ends[i] <= by

    def _by_before(self, begin: int, start: int) -> int | None:
        """Where the "at", "by" or "from" (and the spaces) right before the mention starts, if they are there."""
        space = start
        while space > begin and _SPACE.match(self.text, space - 1):
            space -= 1
        for word in (2, 4):  # at, by; from
            if space < start and space - word >= begin and _BY_BEFORE.fullmatch(self.text, space - word, start):
                return space - word
        return None

    def _passive_actions(self) -> tuple[list[int], list[int]]:
        """Where each passive action of the text ("upgraded", "target raised") starts, and the least end of those
        from there on."""
        if self._passive is None:
            starts, ends = _every_match(_PASSIVE_ACTION, self.text, 0, len(self.text))
            for i in range(len(ends) - 2, -1, -1):
                ends[i] = min(ends[i], ends[i + 1])
            self._passive = starts, ends
        return self._passive

    def _found_from(self, pattern: re.Pattern, pos: int, stop: int) -> bool:
        """``pattern.search(text, pos, stop)``, from every match of the sentence that ends at ``stop``, found once."""
        if (pattern, stop) not in self._found:
            i = bisect_left(self.breaks, stop)
            self._found[pattern, stop] = _every_match(pattern, self.text, self.breaks[i - 1] + 1 if i else 0, stop)[0]
        found = self._found[pattern, stop]
        return bisect_left(found, pos) < len(found)


def _every_match(pattern: re.Pattern, text: str, pos: int, endpos: int) -> tuple[list[int], list[int]]:
    """The start and end of a match of ``pattern`` at each place in text[pos:endpos] where one starts (overlapping
    ones too: a search from any place finds the first of them from there)."""
    starts, ends = [], []
    while match := pattern.search(text, pos, endpos):
        starts.append(match.start())
        ends.append(match.end())
        pos = match.start() + 1
    return starts, ends


def _run_ends(hits: list[Hit]) -> list[int]:
    """For each hit, the index of the next one of another ticker."""
    ends = [len(hits)] * len(hits)
    for i in range(len(hits) - 2, -1, -1):
        ends[i] = i + 1 if hits[i + 1][2] != hits[i][2] else ends[i + 1]
    return ends


def _glued(text: str, pos: int) -> bool:
    return 0 < pos < len(text) and bool(_WORD_CHAR.match(text, pos - 1)) and bool(_WORD_CHAR.match(text, pos))
