"""What a source hands to the pipeline: a document as the source saw it, not yet trusted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class SourceItem:
    """One document from a source, before normalisation.

    ``html``: True when ``text`` is HTML, False when it is plain text, None to detect.
    ``published_at``: an aware datetime, an ISO 8601 / RFC 2822 string or epoch seconds.
    ``where``: where the item came from (feed URL and entry, file and line), for error messages.
    """

    source: str
    text: str | None
    source_id: str | None = None
    title: str | None = None
    url: str | None = None
    published_at: datetime | str | float | int | None = None
    tickers: list[str] = field(default_factory=list)
    lang: str | None = None
    html: bool | None = None
    where: str = ""


class Rejected(ValueError):
    """An item that cannot become a document; ``code`` is a short metric label, ``detail`` says why.
    ``temporary``: a later poll may accept the same item (its time, a little ahead, will have come)."""

    def __init__(self, code: str, detail: str, where: str = "", errors: list[dict[str, str]] | None = None,
                 *, temporary: bool = False) -> None:
        super().__init__(f"{where}: {detail}" if where else detail)
        self.code = code
        self.detail = detail
        self.where = where
        self.errors = errors or []  # per-field errors, for an HTTP 400 body
        self.temporary = temporary


@dataclass(slots=True)
class FetchResult:
    """What one poll of a source produced: good items and the bad ones it skipped (with reasons).

    ``on_delivered`` runs only once every item reached Kafka (or was a known duplicate) and none
    was rejected for now only (``Rejected.temporary``): a source moves its cursor or ETag there, so a
    failed delivery, or an item dated a little ahead of the clock, is fetched again next time.

    ``first_poll``: no poll of this source was delivered yet in this process (it holds no ETag or cursor), so
    what came may be the whole backlog of a feed new to us; the pipeline then holds back the undated items
    (see :meth:`ingest.pipeline.Pipeline.process`).
    """

    items: list[SourceItem] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    not_modified: bool = False
    on_delivered: Callable[[], None] | None = None
    first_poll: bool = False
