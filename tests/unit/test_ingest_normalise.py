"""Normalisation: text cleaning, times, language, ids, canonical URLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finsent.schemas import document_id
from ingest.items import Rejected, SourceItem
from ingest.normalise import (
    MAX_MESSAGE_BYTES,
    Normaliser,
    clean_text,
    detect_language,
    html_to_text,
    parse_timestamp,
    shorten,
)
from ingest.sources.rss import parse_feed
from ingest.tickers import TickerDictionary, TickerExtractor
from ingest.urls import canonical_url

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def normaliser() -> Normaliser:
    return Normaliser(TickerExtractor(TickerDictionary.load()), future_tolerance=300, clock=lambda: NOW)


def item(**fields) -> SourceItem:
    return SourceItem(**({"source": "test", "text": "Apple shares rise after strong iPhone sales"} | fields))


def test_html_becomes_text(normaliser: Normaliser) -> None:
    doc = normaliser.normalise(item(
        text="<p>Apple&nbsp;<b>beats</b> estimates</p><script>alert(1)</script><style>p{}</style>", html=True))
    assert doc.text == "Apple beats estimates"


def test_html_is_detected_when_unknown(normaliser: Normaliser) -> None:
    assert normaliser.normalise(item(text="<div>Tesla <i>falls</i></div>")).text == "Tesla falls"
    assert normaliser.normalise(item(text="AT&amp;T &amp; Verizon")).text == "AT&T & Verizon"


def test_plain_text_keeps_what_only_looks_like_markup(normaliser: Normaliser) -> None:
    # A wire story's instrument codes are not tags; a bare "&reg" is not a character reference.
    assert normaliser.normalise(item(text="Tesla <TSLA.O> and Apple <AAPL> rose")).text == \
        "Tesla <TSLA.O> and Apple <AAPL> rose"
    assert normaliser.normalise(item(text="Fed&regulators split; P&L &copy &amp; more")).text == \
        "Fed&regulators split; P&L &copy & more"
    assert normaliser.normalise(item(text="Q3 &#8217;24 &#x2019; &eacute;")).text == "Q3 '24 ' é"
    assert normaliser.normalise(item(text="<P CLASS=x>Tesla</P><BR/>up <!-- c -->")).text == "Tesla up"


def test_control_zero_width_whitespace_and_nfc() -> None:
    assert clean_text("Cafe\u0301\x00\x07 \u200bprofits\t\n\n  up\x1b") == "Café profits up"
    assert clean_text("lone \ud800 surrogate") == "lone surrogate"


def test_format_characters_go_and_typographic_apostrophes_and_hyphens_fold() -> None:
    assert clean_text("Berk\u00adshire\u2063 McDonald\u2019s \u2018Q3\u2019 non\u2011stop \u2010 x") == \
        "Berkshire McDonald's 'Q3' non-stop - x"
    assert clean_text("Cafe\u00ad\u0301") == "Café"  # the accent finds its letter once the soft hyphen is gone
    assert clean_text("\U0001f468\u200d\U0001f4bb") == "\U0001f468\u200d\U0001f4bb"  # the emoji joiner stays


@pytest.mark.parametrize("title,ticker", [
    ("McDonald\u2019s shares fall after a weak quarter", "MCD"),
    ("Berk&shy;shire Hathaway posts record operating earnings", "BRK.B"),
])
def test_company_names_are_found_through_typography(normaliser: Normaliser, title: str, ticker: str) -> None:
    doc = normaliser.normalise(item(title=f"<b>{title}</b>", text=f"<p>{title}</p>", html=True))
    assert doc.tickers == [ticker] and "\u00ad" not in doc.text


@given(st.text())
def test_clean_text_is_idempotent_and_safe(text: str) -> None:
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    cleaned.encode("utf-8")  # never a lone surrogate left
    assert "\x00" not in cleaned and "  " not in cleaned


def test_times_are_utc(normaliser: Normaliser) -> None:
    doc = normaliser.normalise(item(published_at="2026-11-28T06:00:00-05:00"))
    assert doc.published_at == datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    assert doc.published_at.utcoffset() == timedelta(0)
    assert doc.ingested_at == NOW


@pytest.mark.parametrize("value,expected", [
    ("Fri, 27 Nov 2026 10:00:00 GMT", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("Fri, 27 Nov 2026 10:00:00 -0000", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("2026-11-27T10:00:00Z", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    (1795773600, datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("1795773600", datetime(2026, 11, 27, 10, tzinfo=UTC)),  # epoch seconds as a string (JSON APIs)
    ("1795773600000", datetime(2026, 11, 27, 10, tzinfo=UTC)),  # milliseconds
    (1795773600500, datetime(2026, 11, 27, 10, 0, 0, 500_000, tzinfo=UTC)),
    ("Fri, 27 Nov 2026 11:00:00 +01:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("Fri, 27 Nov 2026 11:00:00 CET", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("Mon, 15 Jun 2026 11:00:00 BST", datetime(2026, 6, 15, 10, tzinfo=UTC)),  # British Summer Time
    ("Fri, 27 Nov 2026 19:00:00 JST", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ("Fri, 27 Nov 2026 15:30:00 IST", datetime(2026, 11, 27, 10, tzinfo=UTC)),  # India
    ("27 Nov 2026 05:00 ET", datetime(2026, 11, 27, 10, tzinfo=UTC)),  # EST in November
    ("15 Jun 2026 06:00 ET", datetime(2026, 6, 15, 10, tzinfo=UTC)),  # EDT in June
    ("2026-11-27T10:00:00 GMT", datetime(2026, 11, 27, 10, tzinfo=UTC)),
])
def test_timestamp_formats(value, expected) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value,code", [
    ("Fri, 27 Nov 2026 10:00:00 XYZ", "naive_timestamp"),  # a zone nobody can look up: not guessed
    ("Fri, 27 Nov 2026 10:00:00 GMT+8", "naive_timestamp"),  # POSIX and the press read the sign oppositely
    ("20261127", "naive_timestamp"),  # eight digits are an ISO 8601 date, not epoch seconds
    ("10:00 ET", "bad_timestamp"),  # no date: never today's
])
def test_zones_and_epochs_that_are_not_guessed(value: str, code: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_timestamp(value)
    assert caught.value.code == code


@given(st.from_regex(r"\A(Fri, 27 Nov 2026 10:00(:00)?|2026-11-27T10:00|\d{9,14})?\s?[A-Za-z+:\d-]{0,7}\Z"))
def test_any_time_string_is_read_or_rejected_never_an_error(text: str) -> None:
    try:
        assert parse_timestamp(text).utcoffset() == timedelta(0)
    except Rejected as exc:
        assert exc.code in ("bad_timestamp", "naive_timestamp")


def test_feed_dates_with_a_named_zone_or_a_colon_offset_are_kept(normaliser: Normaliser) -> None:
    feed = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid>1</guid><title>Acme opens a plant</title><pubDate>Fri, 27 Nov 2026 11:00:00 CET</pubDate></item>
<item><guid>2</guid><title>Acme hires</title><pubDate>Fri, 27 Nov 2026 11:00:00 +01:00</pubDate></item>
</channel></rss>"""
    items = parse_feed(feed, "https://e.com/rss", "rss:e.com").items
    assert [normaliser.normalise(i).published_at for i in items] == [datetime(2026, 11, 27, 10, tzinfo=UTC)] * 2


@pytest.mark.parametrize("value,code", [
    ("2026-11-27T10:00:00", "naive_timestamp"),
    ("27 Nov 2026 10:00:00", "naive_timestamp"),
    ("yesterday", "bad_timestamp"),
    ("2026-11-28T12:30:00Z", "future_timestamp"),
])
def test_zone_less_unreadable_or_future_times_are_rejected(normaliser: Normaliser, value: str, code: str) -> None:
    with pytest.raises(Rejected) as caught:
        normaliser.normalise(item(published_at=value, where="feed.xml entry 3"))
    assert caught.value.code == code
    assert "feed.xml entry 3" in str(caught.value)


def test_a_time_a_little_ahead_is_rejected_for_now_only(normaliser: Normaliser) -> None:
    for published, temporary in (("2026-11-28T20:00:00Z", True), ("2027-11-28T12:00:00Z", False)):
        with pytest.raises(Rejected) as caught:
            normaliser.normalise(item(published_at=published))
        assert (caught.value.code, caught.value.temporary) == ("future_timestamp", temporary)


def test_small_clock_skew_is_tolerated(normaliser: Normaliser) -> None:
    doc = normaliser.normalise(item(published_at="2026-11-28T12:04:00Z"))
    assert doc.published_at == datetime(2026, 11, 28, 12, 4, tzinfo=UTC)


def test_empty_text_falls_back_to_title_else_rejected(normaliser: Normaliser) -> None:
    assert normaliser.normalise(item(text="", title="Nvidia guides higher")).text == "Nvidia guides higher"
    with pytest.raises(Rejected) as caught:
        normaliser.normalise(item(text=" \x00\u200b ", title=None))
    assert caught.value.code == "empty_text"


def test_over_long_title_is_shortened_and_kept_whole_as_text(normaliser: Normaliser) -> None:
    long = "Acme " + "shares rise " * 500  # 6,005 characters
    doc = normaliser.normalise(item(text="", title=long, source_id="1"))
    assert len(doc.title) <= 4096 and doc.title.endswith("…") and doc.text == long.strip()
    assert long.startswith(doc.title.removesuffix("…") + " ")  # cut between two words
    with_body = normaliser.normalise(item(title="T" * 5000, source_id="2"))
    assert with_body.title == "T" * 4095 + "…" and with_body.text == "Apple shares rise after strong iPhone sales"
    # 4,096 characters as sent (the push limit), 8,192 once NFC decomposes each of them
    grown = normaliser.normalise(item(title="\u0344" * 4096, source_id="3"))
    assert len(grown.title) == 4096


def test_shorten() -> None:
    assert shorten("short", 10) == "short"
    assert shorten("alpha beta gamma delta", 12) == "alpha beta…"
    assert shorten("x" * 20, 5) == "xxxx…"


def test_url_too_long_in_canonical_form_is_rejected_with_its_place(normaliser: Normaliser) -> None:
    # 1,017 characters as sent, over 4,096 once the canonical form percent-encodes the query
    with pytest.raises(Rejected) as caught:
        normaliser.normalise(item(url="https://x.com/?q=" + "é" * 1000, source_id="1", where="feed.xml entry 2"))
    assert caught.value.code == "url_too_long" and "feed.xml entry 2" in str(caught.value)


def test_document_over_the_message_size_as_json_is_rejected(normaliser: Normaliser) -> None:
    text = 'say "\\' * 150_000  # 900 KB of characters, but every quote and backslash doubles in JSON
    assert len(text.encode()) <= 900_000
    with pytest.raises(Rejected) as caught:
        normaliser.normalise(item(text=text, html=False, source_id="1"))
    assert caught.value.code == "too_large" and str(MAX_MESSAGE_BYTES) in caught.value.detail


def test_any_schema_error_is_a_rejection_of_that_document(normaliser: Normaliser) -> None:
    class BrokenExtractor:  # stands in for a dictionary bug: the schema is the last check
        def extract(self, text: str) -> list[str]:
            return ["not a ticker"]

    broken = Normaliser(BrokenExtractor(), clock=lambda: NOW)
    with pytest.raises(Rejected) as caught:
        broken.normalise(item(source_id="1", where="documents[3]"))
    assert caught.value.code == "invalid_document" and caught.value.where == "documents[3]"
    assert [e["field"] for e in caught.value.errors] == ["tickers.0"]


def test_id_from_source_id_else_canonical_url_else_content(normaliser: Normaliser) -> None:
    by_source_id = normaliser.normalise(item(source_id="42", url="https://x.com/a"))
    assert by_source_id.id == document_id("test", "42")
    by_url = normaliser.normalise(item(url="HTTPS://News.Example.com/a?utm_source=x&b=2&a=1#post-2"))
    assert by_url.url == "https://news.example.com/a?a=1&b=2#post-2"
    assert by_url.id == document_id("test", None, by_url.url)
    by_text = normaliser.normalise(item())
    assert by_text.source_id.startswith("sha256:") and by_text.id == normaliser.normalise(item()).id
    # A push sender's document: the URL alone would be any source's id (ingest.push_tokens).
    pushed = normaliser.normalise(item(url="https://news.example.com/a"), url_shared=False)
    assert pushed.id == document_id("test", None, pushed.url, url_shared=False)
    assert pushed.id != document_id("api:x", None, pushed.url)
    assert pushed.source_id is None


def test_tickers_from_source_first_then_text(normaliser: Normaliser) -> None:
    doc = normaliser.normalise(item(text="Microsoft and Apple rally", tickers=["$nvda", "not a ticker!", "MSFT"]))
    assert doc.tickers == ["NVDA", "MSFT", "AAPL"]


def test_language(normaliser: Normaliser) -> None:
    assert normaliser.normalise(item(text="Les actions d'Apple montent après des résultats solides")).lang == "fr"
    assert normaliser.normalise(item(text="Apple shares climb after the company reported strong results")).lang == "en"
    assert normaliser.normalise(item(lang="de")).lang == "de"


# English headlines around foreign company names, and one in capitals: langdetect called each of these
# another language (Catalan, Spanish, Norwegian, French, German).
ENGLISH_HEADLINES = [
    "Stora Enso Oyj cuts jobs at Oulu mill",
    "Acme Corp declares $0.25 dividend",
    "Fortum Oyj sells stake in Hafslund",
    "Orion Oyj raises guidance",
    "Banco Bilbao Vizcaya Argentaria reports Q3 results",
    "Deutsche Boerse AG to buy Axioma",
    "Wartsila Oyj Abp order intake falls",
    "SHARES OF ACME CORP JUMP AFTER EARNINGS BEAT",
]


@pytest.mark.parametrize("headline", ENGLISH_HEADLINES)
def test_english_headlines_with_foreign_names_are_english(normaliser: Normaliser, headline: str) -> None:
    assert normaliser.normalise(item(title=headline, text=headline)).lang == "en"


def test_languages_of_other_markets() -> None:
    assert detect_language("Die Aktie von Siemens stieg nach starken Quartalszahlen um vier Prozent.") == "de"
    assert detect_language("Las acciones del banco suben un tres por ciento tras los resultados.") == "es"
    assert detect_language("トヨタ自動車の株価は決算発表後に上昇した。") == "ja"
    assert detect_language("Акции банка выросли после публикации отчетности.") == "ru"
    assert detect_language("$T +1.5%") is None  # too few letters to tell


def test_html_to_text_survives_garbage() -> None:
    assert html_to_text("<<<>>><p>ok") .strip().endswith("ok")


@pytest.mark.parametrize("url,expected", [
    ("https://Example.COM:443/Path?b=2&a=1&utm_medium=rss&fbclid=x#frag", "https://example.com/Path?a=1&b=2#frag"),
    ("https://example.com/live#post-1", "https://example.com/live#post-1"),  # live blog entries differ by it
    ("https://example.com/a?id=7#utm_source=rss&utm_medium=feed", "https://example.com/a?id=7"),
    ("https://example.com/a#xtor=RSS-3", "https://example.com/a"),  # a feed's tag in the fragment
    ("https://example.com/a#", "https://example.com/a"),
    ("http://example.com:8080", "http://example.com:8080/"),
    ("https://example.com/a?gclid=1&ref=home", "https://example.com/a"),
    ("https://example.com/a?id=7&ref_src=twsrc", "https://example.com/a?id=7"),
    ("javascript:alert(1)", None),
    ("not a url", None),
    ("https://[::1]:99999/", None),
    (None, None),
])
def test_canonical_url(url, expected) -> None:
    assert canonical_url(url) == expected
