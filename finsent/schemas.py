"""Event schemas: the records that travel between the parts (DESIGN.md, "Names").

Every model is strict about its shape: unknown fields are refused, times must carry a time
zone (and are normalised to UTC), and a malformed record raises
:class:`pydantic.ValidationError` whose messages name each bad field. Nothing is ever
half-accepted. ``parse_record`` turns raw bytes into a record with one clear error type.

One exception, for rolling upgrades and rollbacks: a record read back from a topic, an index or
stored state, written by another finsent process that may run a newer release, is validated with
:data:`IGNORE_UNKNOWN` (``parse_record(..., ignore_unknown=True)``). Fields this release does not
know are then dropped, at any depth, and named once in a warning; the known fields are validated
as strictly as ever. What a process builds itself, and what comes from outside finsent (the labels
API's labels, say), stays strict.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
Label = Literal["negative", "neutral", "positive"]

def _to_utc(value: datetime) -> datetime:
    # A time at the edge of the calendar (9999-12-31T23:59-01:00) has no UTC form; astimezone's
    # OverflowError would escape pydantic (it only converts ValueError) and crash the caller.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time is out of range once converted to UTC") from None


# Timezone-aware only; stored and emitted as UTC.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Ticker = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,9}([.\-][A-Z0-9]{1,4})?$")]
MAX_TEXT_CHARS = 1_000_000  # the longest text a document or label may hold
NonEmptyText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


def utc_now() -> datetime:
    return datetime.now(UTC)


_JSON_TIME = TypeAdapter(datetime)


def json_time(value: datetime) -> str:
    """``value`` as every record writes its times (UTC, ``…Z``), for fields set outside a model: one document must
    not mix ``Z`` and ``+00:00`` for consumers that compare or parse times as text (DATA_MODEL.md)."""
    return _JSON_TIME.dump_python(_to_utc(value), mode="json")


# The id of a document known by its link alone is that of a document of this source with the link as its source id:
# a source by this name takes such ids (ingest.push_tokens refuses it to push senders).
URL_ID_SOURCE = "url"


def document_id(source: str, source_id: str | None = None, url: str | None = None, *, url_shared: bool = True) -> str:
    """The stable id of DESIGN.md: a hash of source + source id, else of the canonical URL. The URL alone is the id
    whatever the source (a syndicated story is one document) unless ``url_shared`` is False: then it is the source's
    and the URL's, for a pushed document, whose sender must not take (and replace) another source's document."""
    if source_id:
        key = f"{source}\x1f{source_id}"
    elif url and url_shared:
        key = f"{URL_ID_SOURCE}\x1f{url}"
    elif url:  # sources and source ids hold no \x1f (clean_text), a canonical URL starts "http": no other key
        key = f"{source}\x1furl\x1f{url}"
    else:
        raise ValueError("a document id needs a source_id or a canonical url")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


# The validation context of a record another finsent process wrote (see the module docstring).
IGNORE_UNKNOWN: Mapping[str, bool] = MappingProxyType({"ignore_unknown": True})
_MAX_NAMED = 100  # unknown (model, field) pairs warned about, per process: a bad writer's names must not grow it
_named: set[tuple[str, str]] = set()


def _name_unknown(model: str, fields: set[str]) -> None:
    room = min(20, _MAX_NAMED - len(_named))  # at most 20 a line; the others are named when seen again
    new = sorted(name for name in {f[:64] for f in fields} if (model, name) not in _named)[:max(room, 0)]
    if not new:
        return
    _named.update((model, name) for name in new)
    log.warning("%s records carry fields this release does not know, ignored: %s (written by a newer finsent, or a "
                "misspelt field of a producer's; each named once)%s", model, ", ".join(map(repr, new)),
                "; further unknown fields are not named" if len(_named) >= _MAX_NAMED else "")


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=False)

    @model_validator(mode="wrap")
    @classmethod
    def _drop_unknown(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        # The context reaches nested records too (an alert's documents, a document's sentiment).
        if isinstance(data, dict) and info.context and info.context.get("ignore_unknown"):
            unknown = {key for key in data if key not in cls.model_fields}
            if unknown:
                _name_unknown(cls.__name__, {str(key) for key in unknown})
                data = {key: value for key, value in data.items() if key not in unknown}
        return handler(data)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=False))


class RawDocument(Record):
    """A normalised document as ingest produces it to ``finsent.raw``."""

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
    source: Annotated[str, Field(min_length=1, max_length=64)]
    source_id: Annotated[str, Field(max_length=512)] | None = None
    url: Annotated[str, Field(max_length=4096)] | None = None
    title: Annotated[str, Field(max_length=4096)] | None = None
    text: NonEmptyText
    lang: Annotated[str, Field(max_length=16)] | None = None
    tickers: list[Ticker] = Field(default_factory=list, max_length=64)
    published_at: UtcDatetime | None = None
    ingested_at: UtcDatetime

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value


class Sentiment(Record):
    label: Label
    score: Annotated[float, Field(ge=-1.0, le=1.0)]
    probabilities: dict[Label, Annotated[float, Field(ge=0.0, le=1.0)]]
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]

    @model_validator(mode="after")
    def _consistent(self) -> Sentiment:
        if set(self.probabilities) != set(LABELS):
            raise ValueError(f"probabilities must have exactly the labels {list(LABELS)}")
        if abs(sum(self.probabilities.values()) - 1.0) > 1e-3:
            raise ValueError("probabilities must sum to 1")
        return self


class ScoredDocument(RawDocument):
    """A raw document plus its sentiment: what goes to ``finsent.scored`` and ``finsent-docs``."""

    scored_at: UtcDatetime
    indexed_at: UtcDatetime | None = None
    sentiment: Sentiment
    model_version: Annotated[str, Field(min_length=1, max_length=128)]


class LabelRecord(Record):
    """A human (or imported) label for a document: ``finsent.labels`` → ``finsent-labels``."""

    doc_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    text: NonEmptyText
    label: Label
    annotator: Annotated[str, Field(min_length=1, max_length=128)] = "unknown"
    source: Annotated[str, Field(max_length=64)] = "api"
    labeled_at: UtcDatetime


class Aggregate(Record):
    """Per-ticker tumbling-window statistics: ``finsent.aggregates`` → ``finsent-aggregates``."""

    ticker: Ticker
    window: Annotated[str, Field(pattern=r"^\d+[smhd]$")]
    window_start: UtcDatetime
    window_end: UtcDatetime
    count: Annotated[int, Field(ge=0)]
    counts: dict[Label, Annotated[int, Field(ge=0)]]
    mean_score: Annotated[float, Field(ge=-1.0, le=1.0)]
    weighted_mean_score: Annotated[float, Field(ge=-1.0, le=1.0)]
    sentiment_z: float | None = None
    volume_z: float | None = None
    updated_at: UtcDatetime

    @model_validator(mode="after")
    def _window_order(self) -> Aggregate:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class AlertDocument(Record):
    id: Annotated[str, Field(min_length=1, max_length=128)]
    title: str | None = None
    url: str | None = None
    score: float


class Alert(Record):
    """An alert raised by a rule; ``idempotency_key`` is the same on every delivery attempt."""

    idempotency_key: Annotated[str, Field(min_length=8, max_length=128)]
    rule: Annotated[str, Field(min_length=1, max_length=128)]
    kind: Literal["sentiment_shift", "volume_spike", "negative_burst", "model", "drift"]
    ticker: Ticker | None = None
    window: str | None = None
    window_start: UtcDatetime | None = None
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    # The z-score a sentiment_shift or volume_spike rule compared with its threshold; None for the other kinds.
    # Absent from the JSON of alerts stored before it existed, which still load (as None).
    z: Annotated[float, Field(allow_inf_nan=False)] | None = None
    message: Annotated[str, Field(max_length=4096)]
    documents: list[AlertDocument] = Field(default_factory=list, max_length=50)
    dashboard_url: str | None = None
    created_at: UtcDatetime
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: Annotated[int, Field(ge=0)] = 0


class ControlMessage(Record):
    """Sent on ``finsent.control``. ``promote``/``rollback``: workers load the named model and
    swap between batches. ``drift``: a drift check fired (alert rules listen; workers ignore it).

    ``sequence`` and ``registry_id``, together or neither: the number the registry gave the champion move this
    message announces, and which registry (model.registry). A worker ignores a promote or rollback that is not newer
    than the last it applied from the same registry: the broker may write two senders' messages in the other order
    than their moves. Neither: a sender from before them, or a model that is no registry's champion (applied as
    it comes)."""

    action: Literal["promote", "rollback", "drift"]
    model_version: Annotated[str, Field(min_length=1, max_length=128)]
    model_path: str | None = None
    reason: Annotated[str, Field(max_length=4096)] | None = None
    details: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    issued_at: UtcDatetime
    sequence: Annotated[int, Field(ge=1, strict=True)] | None = None
    registry_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z_.-]{1,64}$")] | None = None  # model.registry.REGISTRY_ID

    @model_validator(mode="after")
    def _sequence_of_a_registry(self) -> ControlMessage:
        if (self.sequence is None) != (self.registry_id is None):
            raise ValueError("sequence and registry_id come together: a sequence orders the moves of one registry")
        return self


class DeadLetter(Record):
    """A record that could not be processed, kept whole with the reason (``finsent.dlq``); only a record too big
    to send in a letter is cut, and says so."""

    stage: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Annotated[str, Field(min_length=1, max_length=8192)]
    original: str = Field(description="the original bytes, decoded with backslash escapes if not UTF-8")
    original_bytes: Annotated[int, Field(ge=0)] | None = Field(None, description="size of the original record")
    original_truncated: bool = Field(False, description="original holds only the record's first part: the whole "
                                                        "letter would be over the producer's largest message")
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    failed_at: UtcDatetime


class RecordError(ValueError):
    """Raw bytes that are not a valid record; ``reason`` says what and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


R = TypeVar("R", bound=Record)


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_record(model: type[R], data: bytes | str | dict, *, max_bytes: int | None = None,
                 ignore_unknown: bool = False) -> R:
    """Validate one record from JSON bytes (or an already-decoded dict); raise RecordError. ``ignore_unknown``: for
    a record another finsent process wrote (:data:`IGNORE_UNKNOWN`), not for input from outside finsent."""
    if isinstance(data, dict):
        obj = data
    else:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if max_bytes is not None and len(raw) > max_bytes:
            raise RecordError(f"record is {len(raw)} bytes, over the limit of {max_bytes}")
        if not raw.strip():
            raise RecordError("record is empty")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        return model.model_validate(obj, context=IGNORE_UNKNOWN if ignore_unknown else None)
    except ValidationError as exc:
        raise RecordError(f"invalid {model.__name__}: {describe_validation_error(exc)}") from None


def original_text(raw: bytes) -> str:
    """Bytes as text for a dead letter, without losing any byte (invalid UTF-8 escaped)."""
    return raw.decode("utf-8", errors="backslashreplace")
