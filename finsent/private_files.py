"""Reading a file of secrets (the push and labels tokens files): refused when every user of the machine may read it,
and an error names the file, never its content."""

from __future__ import annotations

import os
from pathlib import Path


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
