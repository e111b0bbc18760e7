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
in it: the company acted on must be one of them.
"""

from __future__ import annotations

import re

from ingest.ticker_hits import LIST_SEP, Hit

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
_TARGET_VERB = (r"(?:raise[sd]?|lift(?:s|ed)?|boost(?:s|ed)?|hike[sd]?|lower(?:s|ed)?|trim(?:s|med)?|slash(?:es|ed)?|"
                r"reduce[sd]?|cuts?)")
_TARGET_ACTION = re.compile(_DESK + _TARGET_VERB + _ACTIVE)
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


def without_acting_brokers(text: str, hits: list[Hit]) -> list[Hit]:
    """The hits less those of a broker whose every mention acts on another company ("Goldman upgrades Tesla")."""
    acting = {ticker for _, _, ticker in hits if ticker in BROKERS}
    if not acting:  # most texts: no copy of the hits
        return hits
    for hit in hits:
        if hit[2] in acting and not _acts_as_analyst(text, hit, hits):
            acting.discard(hit[2])
    return [hit for hit in hits if hit[2] not in acting]


def _acts_as_analyst(text: str, hit: Hit, hits: list[Hit]) -> bool:
    """Whether this mention of a bank is an analyst's action on another company of ``hits`` in its sentence (the
    banks listed with it, "Goldman and Morgan Stanley", act as one). It is when, after the mention (or the list),

    - its analysts speak and another company is in the sentence ("Goldman Sachs analyst says Nvidia…");
    - a rating action or a change of target follows, and a company comes after it or heads the headline ("Goldman
      upgrades Tesla", "Tesla: Goldman initiates at buy");
    - its call follows, and a company not listed with the bank comes before ("Tesla gets Goldman upgrade");
    - a company follows as the object of its call or view ("Morgan Stanley's Tesla price target", "Goldman Sachs says
      Tesla is a buy", "Morgan Stanley: Tesla could double");

    or when the action stands before the mention, on a company before that ("Tesla upgraded at Goldman")."""
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
    if _CALL.match(after) and any(not LIST_SEP.fullmatch(text[e:start]) for e in before):
        return True
    for s, e in others:
        if s >= end and (re.fullmatch(r"['’]s\s+", text[end:s]) and _CALL.match(text, e)
                         or _SAYS.fullmatch(text[end:s]) and (_VIEW.search(text, e, stop) or _FORECAST.match(text, e))):
            return True
    return any(_BY_BROKER.search(text[e:start]) for e in before)


def _end_of_broker_list(text: str, end: int, hits: list[Hit]) -> int:
    """Where a list of banks that starts with this one ends: they act together in "Goldman and Morgan Stanley
    upgrade Apple". A list with another company in it ("Goldman Sachs and Apple shares fall") ends before it."""
    for s, e, t in sorted(hits):
        if s >= end and t in BROKERS and LIST_SEP.fullmatch(text[end:s]):
            end = e
    return end
