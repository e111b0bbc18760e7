"""Who a labels API request speaks for: the shared token, or an annotator's own token.

``FINSENT_LABEL_TOKENS_FILE`` gives annotators their own tokens, one ``annotator: token`` (or ``annotator token``)
a line; blank lines and lines starting with ``#`` are skipped. A label sent with an annotator's token is theirs:
its ``annotator`` must be that name or left out. The shared ``FINSENT_LABEL_TOKEN`` cannot label under a trusted
annotator's name (``FINSENT_TRUSTED_ANNOTATORS``) nor under a name that has a token of its own: with it the name
is only the caller's say-so, and a trusted name outvotes everyone (retrain.conflicts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from finsent.http_requests import bearer_matches
from finsent.schemas import LabelRecord
from finsent.private_files import read_private_text, token_lines
from finsent.settings import Settings
from retrain.conflicts import parse_annotators

_LINE = re.compile(r"([^\s:#]{1,128})\s*(?::\s*|\s+)(\S+)")


class LabelTokensError(ValueError):
    """A tokens file that cannot be used; the message names the file and line, never a token."""


@dataclass(frozen=True)
class Caller:
    """The holder of a valid token: ``annotator`` is None for the shared token."""

    annotator: str | None


def parse_tokens(text: str, where: str) -> dict[str, bytes]:
    """Each annotator's token from the file's text; ``where`` names the file in errors."""
    return {match[1]: match[2].encode("utf-8")
            for _, match in token_lines(text, where, _LINE, LabelTokensError, repeated="token",
                                        expected="'annotator: token' (a name of at most 128 characters without "
                                                 "spaces or ':', then the token)")}


def read_tokens(path: Path) -> dict[str, bytes]:
    """The tokens of ``path``, which no other user of the machine may read."""
    return parse_tokens(read_private_text(path, LabelTokensError), str(path))


@dataclass(frozen=True)
class LabelAuth:
    """The tokens the API accepts and the names the shared token may not use."""

    shared: bytes | None
    personal: Mapping[str, bytes]  # annotator -> token
    trusted: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelAuth:
        if settings.label_token is None and settings.label_tokens_file is None:
            raise ValueError("neither FINSENT_LABEL_TOKEN nor FINSENT_LABEL_TOKENS_FILE is set: the labels API "
                             "refuses to run without a token")
        shared = settings.label_token.get_secret_value().encode("utf-8") if settings.label_token else None
        personal = read_tokens(settings.label_tokens_file) if settings.label_tokens_file else {}
        if shared is not None and shared in personal.values():
            raise LabelTokensError(f"{settings.label_tokens_file}: FINSENT_LABEL_TOKEN is also an annotator's token")
        return cls(shared=shared, personal=personal, trusted=parse_annotators(settings.trusted_annotators))

    def caller(self, request: web.Request) -> Caller | None:
        """Whose token the request carries, or None. Every token is compared (each in constant time), so the
        time taken does not tell which one matched."""
        named = [name for name, token in self.personal.items() if bearer_matches(request, token)]
        shared = self.shared is not None and bearer_matches(request, self.shared)
        return Caller(named[0]) if named else Caller(None) if shared else None

    def refusal(self, caller: Caller, records: Sequence[LabelRecord], where: str = "labels") -> str | None:
        """Why ``caller`` may not send these labels (answered 403), or None. Records built for an annotator's
        token got that annotator where they gave none (retrain.label_intake.build_records)."""
        for n, record in enumerate(records):
            if caller.annotator is not None and record.annotator != caller.annotator:
                return (f"{where}[{n}]: annotator {record.annotator!r}, but the token is that of "
                        f"{caller.annotator!r}: leave annotator out or give that name")
            if caller.annotator is None and (record.annotator in self.trusted or record.annotator in self.personal):
                return (f"{where}[{n}]: the shared token (FINSENT_LABEL_TOKEN) cannot label as "
                        f"{record.annotator!r}, a trusted annotator or one with a token of their own: "
                        "send their token (FINSENT_LABEL_TOKENS_FILE)")
        return None
