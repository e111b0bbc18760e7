"""Reading a file of secrets (the push and labels tokens files): refused when every user of the machine may read it,
and an error names the file, never its content. :func:`token_lines` holds the rules both tokens files share, so a
fix to one (a byte order mark, a duplicate token) is a fix to both."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

MIN_TOKEN_CHARS = 16  # a token is a password (an annotator's also grants trust): no short ones


def read_private_text(path: Path, error: type[ValueError]) -> str:
    """The text of ``path``; ``error`` (the caller's own ValueError) when it cannot be read, is not UTF-8, or is
    readable by every user of this machine."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8-sig")  # a byte order mark is no part of the first line
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 ({exc})") from None
    if os.name == "posix" and mode & 0o004:
        raise error(f"{path}: every user of this machine may read it (mode {oct(mode & 0o777)}); chmod o-r {path}")
    return text


def token_lines(text: str, where: str, pattern: re.Pattern[str], error: type[ValueError], *, expected: str,
                repeated: str) -> Iterator[tuple[str, re.Match[str]]]:
    """``(place, match)`` for each line of a tokens file that holds one, ``place`` being ``where:number`` and
    ``match`` the line (stripped) matched whole by ``pattern``, whose groups 1 and 2 are the name and the token.
    Blank lines and lines starting with ``#`` are skipped. ``error`` when a line is not of that form (``expected``
    says what it should be; the line is not quoted: it may hold a token), a name has a second line (``repeated``
    names what is repeated: "line", "token"), a token is shorter than :data:`MIN_TOKEN_CHARS` or is another line's."""
    names: set[str] = set()
    token_line: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line, place = raw.strip(), f"{where}:{number}"
        if not line or line.startswith("#"):
            continue
        match = pattern.fullmatch(line)
        if match is None:
            raise error(f"{place}: expected {expected}")
        name, token = match[1], match[2].encode("utf-8")
        if name in names:
            raise error(f"{place}: a second {repeated} for {name!r}")
        if len(match[2]) < MIN_TOKEN_CHARS:
            raise error(f"{place}: {name!r}'s token is shorter than {MIN_TOKEN_CHARS} characters")
        if token in token_line:
            raise error(f"{place}: {name!r} has the token of line {token_line[token]}: each needs their own")
        names.add(name)
        token_line[token] = number
        yield place, match
