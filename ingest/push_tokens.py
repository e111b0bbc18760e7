"""Who a push request speaks for, and the source names its documents may carry.

A document's id derives from its ``source`` and ``source_id`` (finsent.schemas.document_id), so a sender free to
pick any source can take the id of another's document: overwrite it in the index, or, sent first, make the real
one a duplicate. ``FINSENT_PUSH_TOKENS_FILE`` gives each sender a token of its own, bound to the sources it may
write: one ``sender: token source…`` line (``sender token source…`` too); blank lines and lines starting with ``#``
are skipped, and a byte order mark and CRLF line ends (a Windows editor's) are read as such. A source is a name
(``push:acme``), a prefix ending in ``*`` (``push:acme-*``), or ``*`` alone: any source, for a trusted bridge that
replays feed documents. A sender's names are matched exactly, as the normaliser will store them.

The shared ``FINSENT_PUSH_TOKEN`` writes any source but those of ingest's own polling sources and file replay
(:data:`FEED_SOURCES`) and those a sender's own token has (its names and prefixes; ``*`` is no claim), compared
without case or width (NFKC, then casefold): an ``RSS:host`` or a fullwidth ``ｒｓｓ:host`` would not take a feed's
id, but would pass for it on the dashboard. Nor may it write a source with a character outside :data:`SHARED_CHARS`
(ASCII letters and digits, space, ``-._:/@``): a letter of another script can be drawn as a Latin one (a Cyrillic
``е`` in ``rеddit``, an all-Cyrillic ``арі:news``; a single script is no safeguard), and so can a semicolon for a
colon. A sender that needs such a name gets a line of its own listing it. Within those characters a reader goes by a
name's :func:`words`, not by what separates them: the shared token writes no name whose words are those of one it
may not write, or begin with them and a separator (``reddit.``, ``:rss :news.example.com``, ``push.acme``,
``reddit:wsb``). An RSS feed given a ``name`` of its own in sources.yml is not known here: list it in a sender's line
to keep it from the shared token.

A source name guards ids only: a URL or a text is one story whatever the source (ingest.dedup). So each sender's
documents are deduplicated in a :attr:`Sender.scope` of their own, where they can make duplicates only of that
sender's documents, and a document without a ``source_id`` takes an id of its source's rather than its URL's alone.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from aiohttp import web

from finsent.http_requests import bearer_matches
from finsent.private_files import read_private_text, token_lines
from finsent.schemas import URL_ID_SOURCE
from finsent.settings import Settings
from ingest.items import SourceItem
from ingest.normalise import MAX_SOURCE_CHARS, clean_text

ANY = "*"
# The sources ingest writes itself: RSS feeds (rss:<host>), API sources (api:<name>), Reddit and StockTwits posts,
# and `finsent ingest file` lines that name none.
FEED_SOURCES = ("rss:*", "api:*", "reddit", "stocktwits", "replay")  # folded already (lower-case ASCII)
DEFAULT_SOURCE = "push"  # what a pushed document without a source gets (ingest.push.LABEL)
# What the shared token's sources are written with: enough for `push:acme-eu`, `wire`, `desk/fx@london`, and no
# letter of another script drawn like a Latin one (TR39's confusables need a table; a set this small needs none).
# Look-alikes within ASCII (`1`/`l`, `rn`/`m`) remain (RELIABILITY.md).
SHARED_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -._:/@")
SEPARATORS = " -._:/@"  # what stands between the words of a name; which of them, or how many, a reader hardly sees
_SEPARATOR_RUN = re.compile(r"[ \-._:/@]+")
_WORDS_RULE = ("Names are compared by their words, whatever separates them (spaces and '-._:/@', one or several, "
               "none at the ends), and one that begins with another's words and a separator reads as that one")
_LINE = re.compile(r"([^\s:#]{1,128})\s*(?::\s*|\s+)(\S+)((?:\s+\S+)+)")


class PushTokensError(ValueError):
    """A tokens file that cannot be used; the message names the file and line, never a token."""


@dataclass(frozen=True)
class Sender:
    """The holder of a valid token: ``name`` is None for the shared token."""

    name: str | None
    sources: tuple[str, ...] = ()

    @property
    def scope(self) -> str | None:
        """The dedup scope of its documents (ingest.dedup): None, that of ingest's own sources, for a sender that may
        write any source (``*``: it can take any document's id already); else its own, one for all holders of the
        shared token (each of them may write the others' sources anyway). Names hold no ':'."""
        if ANY in self.sources:
            return None
        return f"sender:{self.name}" if self.name is not None else "shared-token"


def matches(pattern: str, source: str) -> bool:
    """Whether ``source`` is the name ``pattern``, or starts with its prefix (``push:acme-*``); ``*`` is any."""
    return source.startswith(pattern[:-1]) if pattern.endswith(ANY) else source == pattern


def folded(name: str) -> str:
    """``name`` without case or width (NFKC, casefold, NFKC: Unicode's NFKC_Casefold, near enough)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def words(name: str) -> str:
    """``name`` as a reader goes by it: folded, each run of separators one space, none at either end, so
    ``:Reddit.`` is ``reddit``, and ``rss :x``, ``rss.x`` and ``rss:x`` are all ``rss x``."""
    return _SEPARATOR_RUN.sub(" ", folded(name)).strip()


@functools.cache  # of a pattern: ingest's own and the tokens file's, a bounded set
def _pattern_words(pattern: str) -> tuple[str, bool]:
    """The words of ``pattern``'s name, and whether a source's words must go on past them with a separator (a name,
    or a prefix that ends with a separator: ``rss:*`` reads as ``rss news``, not as ``rss`` or ``rssfeed``)."""
    stem = pattern.removesuffix(ANY)
    return words(stem), not pattern.endswith(ANY) or stem.endswith(tuple(SEPARATORS))


def reads_as(pattern: str, source: str, ours: str) -> bool:
    """Whether ``source`` (folded; ``ours``, its :func:`words`) :func:`matches` ``pattern`` (folded), or would be read
    as a source of it: its words are those of the pattern's name, or begin with them (``reddit.``, ``reddit:wsb``,
    ``push.acme-eu``)."""
    if matches(pattern, source):
        return True
    theirs, boundary = _pattern_words(pattern)
    if not theirs:
        return False
    if not boundary:  # a prefix that ends inside a word: push:ac* is push:acme's
        return ours.startswith(theirs)
    return ours.startswith(theirs + " ") or (ours == theirs and not pattern.endswith(ANY))


def _pattern_problem(pattern: str) -> str | None:
    if pattern == ANY:
        return None
    name = pattern.removesuffix(ANY)
    if len(name) > MAX_SOURCE_CHARS:  # not quoted: a misplaced token would be this long
        return f"is over {MAX_SOURCE_CHARS} characters, longer than any source name"
    if ANY in name:
        return f"{pattern!r} has a '*' before its end: only a prefix (ending in '*') or '*' alone is a pattern"
    if clean_text(name) != name:
        return f"{pattern!r} is not as the normaliser stores a source name (invisible or control characters)"
    return None


def parse_tokens(text: str, where: str) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """Each sender's token and sources from the file's text; ``where`` names the file in errors."""
    senders: dict[str, tuple[bytes, tuple[str, ...]]] = {}
    for place, match in token_lines(text, where, _LINE, PushTokensError, repeated="line",
                                    expected="'sender: token source…' (a name of at most 128 characters without "
                                             "spaces or ':', the token, then the sources it may write)"):
        name, sources = match[1], tuple(match[3].split())
        for n, pattern in enumerate(sources, start=1):
            if problem := _pattern_problem(pattern):
                raise PushTokensError(f"{place}: {name!r}'s source {n} {problem}")
        senders[name] = (match[2].encode("utf-8"), sources)
    return senders


def read_tokens(path: Path) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """The senders of ``path``, which no other user of the machine may read."""
    return parse_tokens(read_private_text(path, PushTokensError), str(path))


@dataclass(frozen=True)
class PushAuth:
    """The tokens the push endpoint accepts, and the sources each may write."""

    shared: bytes | None
    senders: Mapping[str, tuple[bytes, tuple[str, ...]]]  # sender -> (token, sources)

    @classmethod
    def from_settings(cls, settings: Settings) -> PushAuth:
        """Raises ValueError (PushTokensError for the file) naming the setting that is wrong."""
        secret = settings.push_token.get_secret_value() if settings.push_token is not None else ""
        if not secret and settings.push_tokens_file is None:
            raise ValueError("neither FINSENT_PUSH_TOKEN nor FINSENT_PUSH_TOKENS_FILE is set: the push endpoint "
                             "requires a bearer token")
        shared = secret.encode("utf-8") if secret else None
        senders = read_tokens(settings.push_tokens_file) if settings.push_tokens_file else {}
        if shared is not None and any(shared == token for token, _ in senders.values()):
            raise PushTokensError(f"{settings.push_tokens_file}: FINSENT_PUSH_TOKEN is also a sender's token")
        return cls(shared=shared, senders=senders)

    @cached_property
    def _claimed(self) -> tuple[str, ...]:
        """The senders' names and prefixes, folded: the shared token may write none of them."""
        return tuple(folded(p) for _, sources in self.senders.values() for p in sources if p != ANY)

    def sender(self, request: web.Request) -> Sender | None:
        """Whose token the request carries, or None. Every token is compared (each in constant time), so the
        time taken does not tell which one matched."""
        named = [Sender(name, sources) for name, (token, sources) in self.senders.items()
                 if bearer_matches(request, token)]
        shared = self.shared is not None and bearer_matches(request, self.shared)
        return named[0] if named else Sender(None) if shared else None

    def refusal(self, sender: Sender, items: Sequence[SourceItem]) -> str | None:
        """Why ``sender`` may not send these documents (answered 403), or None. A source is judged as the
        normaliser will store it: invisible characters are no way around a name."""
        for item in items:
            source = clean_text(item.source or "")
            if not source:
                continue  # the normaliser rejects it (bad_source): no id is taken
            shown = f"source {source!r}" + (" (given when a document names none)" if source == DEFAULT_SOURCE else "")
            if folded(source) == URL_ID_SOURCE and not (sender.name is not None and ANY in sender.sources):
                return (f"{item.where}: {shown} cannot be pushed: a document of it with a link as its source_id takes "
                        "the id of any document known by that link alone (an API article, a file line). A sender "
                        "given '*' can (FINSENT_PUSH_TOKENS_FILE)")
            if sender.name is not None:
                if not any(matches(p, source) for p in sender.sources):
                    return (f"{item.where}: {shown} is not one that sender {sender.name!r} may write "
                            f"({', '.join(sender.sources)}; FINSENT_PUSH_TOKENS_FILE)")
                continue
            if refused := self._shared_refusal(source, f"{item.where}: the shared token (FINSENT_PUSH_TOKEN) cannot "
                                                       f"write {shown}"):
                return refused
        return None

    def _shared_refusal(self, source: str, cannot: str) -> str | None:
        """Why the shared token may not write ``source`` (``cannot`` begins the answer), or None."""
        plain, ours = folded(source), words(source)
        if feed := next((p for p in FEED_SOURCES if reads_as(p, plain, ours)), None):  # written folded
            if matches(feed, plain):
                return (f"{cannot}, a name of ingest's own sources ({', '.join(FEED_SOURCES)}): its documents would "
                        "take their ids. A sender's token that lists it can (FINSENT_PUSH_TOKENS_FILE)")
            return (f"{cannot}: it reads as {feed!r}, ingest's own ({', '.join(FEED_SOURCES)}), and its documents "
                    f"would pass for theirs. {_WORDS_RULE}. A sender's token that lists it can "
                    "(FINSENT_PUSH_TOKENS_FILE)")
        if claimed := next((p for p in self._claimed if reads_as(p, plain, ours)), None):
            if matches(claimed, plain):
                return f"{cannot}, a source a sender's own token has (FINSENT_PUSH_TOKENS_FILE): send that token"
            return (f"{cannot}: it reads as a source a sender's own token has (FINSENT_PUSH_TOKENS_FILE). "
                    f"{_WORDS_RULE}. Send that token")
        if odd := next((ch for ch in source if ch not in SHARED_CHARS), None):
            return (f"{cannot}: its {_named(odd)} is not an ASCII letter, digit, space or one of '-._:/@', the "
                    "characters it writes (a look-alike of another source's name would pass for it on the "
                    "dashboard). A sender's token that lists it can (FINSENT_PUSH_TOKENS_FILE)")
        return None


def _named(ch: str) -> str:
    """``ch`` as an error shows it: ``'е' (U+0435 CYRILLIC SMALL LETTER IE)``."""
    return f"{ch!r} (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')})"
