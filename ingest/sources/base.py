"""The one interface every polling source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ingest.items import FetchResult
from ingest.sources.http import HttpFetcher


class Source(ABC):
    """A place documents come from. ``name`` labels metrics and logs (``rss:example.com``);
    ``interval`` is the seconds between two polls. ``fetch`` does one poll: it returns the
    documents it read and the ones it had to skip, or raises
    :class:`ingest.sources.http.FetchError` when the poll failed as a whole."""

    name: str
    interval: float

    def __init__(self, http: HttpFetcher, *, name: str, interval: float) -> None:
        self.http = http
        self.name = name
        self.interval = interval

    @abstractmethod
    async def fetch(self) -> FetchResult: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def get_path(obj: Any, path: str) -> Any:
    """``get_path({"a": [{"b": 1}]}, "a.0.b") == 1``; None where the path does not lead."""
    if not path:
        return obj
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.lstrip("-").isdigit():
            index = int(part)
            obj = obj[index] if -len(obj) <= index < len(obj) else None
        else:
            return None
        if obj is None:
            return None
    return obj


def load_json(body: bytes, where: str) -> Any:
    """Parse a JSON body; malformed JSON or invalid UTF-8 raise FetchError("parse")."""
    import orjson

    from ingest.sources.http import FetchError

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FetchError("parse", f"{where}: not valid JSON ({exc})") from None
