"""Documents handed to us whole (HTTP push, file replay): the shape of DESIGN.md.

``text`` is required; ``source``, ``source_id``, ``title``, ``url``, ``published_at``,
``tickers`` and ``lang`` are optional. Times are checked by the normaliser (zone required).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from ingest.items import Rejected, SourceItem

Short = Annotated[str, Field(max_length=4096)]


class InboundDocument(BaseModel):
    """Strict: an unknown field is an error (a typo should not silently lose a field)."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    source: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # Strict numbers: pydantic would otherwise read true/false as 1/0 (a 1970 date, an id "1").
    source_id: Annotated[str, Field(min_length=1, max_length=512)] | StrictInt | None = None
    title: Short | None = None
    url: Short | None = None
    published_at: Annotated[str, Field(max_length=64)] | StrictInt | StrictFloat | None = None
    tickers: list[Annotated[str, Field(max_length=16)]] = Field(default_factory=list, max_length=64)
    lang: Annotated[str, Field(max_length=16)] | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value


class LenientInboundDocument(InboundDocument):
    """For replay files written by other tools: extra columns (a label, a score) are ignored."""

    model_config = ConfigDict(extra="ignore")


MAX_FIELD_ERRORS = 10  # per document: one with thousands of unknown fields would otherwise echo each back


def invalid_document(exc: ValidationError, where: str = "") -> Rejected:
    """The rejection of a document that failed validation, with its first fields' errors."""
    # A field's name is the sender's (an unknown one too): shortened, so the answer and the log stay small.
    errors = [{"field": _shortened(".".join(str(p) for p in err["loc"])) or "(document)", "error": err["msg"]}
              for err in exc.errors(include_url=False, include_input=False)[:MAX_FIELD_ERRORS]]
    detail = "; ".join(f"{e['field']}: {e['error']}" for e in errors)
    if exc.error_count() > len(errors):
        detail += f"; and {exc.error_count() - len(errors)} more"
    return Rejected("invalid_document", detail, where, errors)


def _shortened(name: str, limit: int = 100) -> str:
    return name if len(name) <= limit else name[:limit] + "…"


def to_item(raw: object, *, default_source: str, where: str, lenient: bool = False) -> SourceItem:
    """A source item from one decoded JSON object / CSV row; Rejected (with field errors) if invalid."""
    model = LenientInboundDocument if lenient else InboundDocument
    if not isinstance(raw, dict):
        raise Rejected("bad_shape", f"expected a JSON object, got {type(raw).__name__}", where)
    try:
        doc = model.model_validate(raw)
    except ValidationError as exc:
        raise invalid_document(exc, where) from None
    return SourceItem(
        source=doc.source or default_source,
        source_id=str(doc.source_id) if doc.source_id is not None else None,
        title=doc.title,
        text=doc.text,
        url=doc.url,
        published_at=doc.published_at,
        tickers=doc.tickers,
        lang=doc.lang,
        where=where,
    )
