"""Async bulk sink into Elasticsearch that never drops a document.

Each item of a bulk response is judged on its own:

* indexed (2xx) → done;
* rejected for what it is (400 mapping/parse errors and other 4xx) → returned as a
  rejection with the reason, for the caller's dead-letter queue;
* refused for now (429, 5xx, and an error of the whole index: a write block, 403
  ``cluster_block_exception``; a missing index where auto-create is off; a closed index; an alias
  with no write index) → retried after a jittered exponential back-off.

Connection errors, timeouts and 429/5xx answers to the whole request are retried the same
way, forever: the call only returns once every document is indexed or rejected, which is
what holds the stream (backpressure) while Elasticsearch is away.

An item with a ``version`` is written with ``version_type=external_gte``: Elasticsearch keeps it only if
no higher version of its id is there (an equal one overwrites, so a retry converges). A 409 version conflict
means a newer document is already there: the item is *superseded*, neither indexed nor rejected
(:meth:`ElasticsearchSink.index_versioned`). Window aggregates use it (:mod:`stream.aggregator`); scored
documents have no version and are overwritten by id, as before.

Requests are cut to :data:`MAX_BULK_BYTES`; one answered 413 (over the cluster's
``http.max_content_length``) is sent again in halves, down to a document too large on its
own, which is rejected.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from finsent import clients, topology
from finsent.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# Errors of the index, not of the document, that every document would get alike: a write block (before a
# shrink or a reindex), a missing index where auto-create is off, a closed index. Hold the stream until an
# operator mends it, rather than dead-letter the lot.
INDEX_WIDE_ERRORS = {"cluster_block_exception", "index_not_found_exception", "index_closed_exception"}
# An alias with no write index (a rollover half done) answers illegal_argument_exception, as some
# documents do: told apart by its reason.
NO_WRITE_INDEX = "no write index is defined for alias"
# Elasticsearch answers a request over http.max_content_length (100 MB by default) with 413, every time
# it is sent: a bulk request is cut well under it (its guide suggests a few MB to tens of MB).
MAX_BULK_BYTES = 10 * 1024 * 1024
# What Elasticsearch answers (409) to an external version lower than the one it holds.
VERSION_CONFLICT = "version_conflict_engine_exception"


@dataclass(frozen=True)
class BulkItem:
    id: str
    doc: dict[str, Any]
    version: int | None = None  # external version (see the module notes); None: overwrite whatever is there


@dataclass(frozen=True)
class Rejection:
    item: BulkItem
    status: int
    reason: str


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential back-off: uniform(0, min(cap, base·2^attempt))."""

    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(self.base / 2, min(self.cap, self.base * 2 ** min(attempt, 30)))


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        return text
    return str(error)


def index_wide(error: Any) -> bool:
    """Whether an item's error is the whole index's (see INDEX_WIDE_ERRORS), not its document's."""
    if not isinstance(error, dict):
        return False
    return error.get("type") in INDEX_WIDE_ERRORS or str(error.get("reason", "")).startswith(NO_WRITE_INDEX)


def _refused_for_now(status: int, error: Any) -> bool:
    return status in RETRYABLE_STATUS or index_wide(error)


def held_reason(response_items: Sequence[dict[str, Any]]) -> str:
    """The first reason an item of a bulk answer was refused for now, for the log ("" if none)."""
    for answer in response_items:
        result = next(iter(answer.values()))
        status, error = int(result.get("status", 0)), result.get("error")
        if not 200 <= status < 300 and _refused_for_now(status, error):
            return _reason(error or f"status {status}")
    return ""


def action(index: str, item: BulkItem) -> dict[str, Any]:
    """The item's action line in a bulk body."""
    meta: dict[str, Any] = {"_index": index, "_id": item.id}
    if item.version is not None:
        meta |= {"version": item.version, "version_type": "external_gte"}
    return {"index": meta}


def request_bytes(index: str, item: BulkItem) -> int:
    """The item's size in a bulk body (the client writes the same compact UTF-8 JSON)."""
    return len(orjson.dumps(action(index, item))) + len(orjson.dumps(item.doc)) + 2


def _superseded(item: BulkItem, status: int, error: Any) -> bool:
    return (item.version is not None and status == 409 and isinstance(error, dict)
            and error.get("type") == VERSION_CONFLICT)


def cut(items: Sequence[BulkItem], sizes: Sequence[int], max_bytes: int) -> list[list[BulkItem]]:
    """The items in order, in runs of at most ``max_bytes`` (an item larger than that alone)."""
    runs: list[list[BulkItem]] = []
    total = 0
    for item, size in zip(items, sizes, strict=True):
        if not runs or total + size > max_bytes:
            runs.append([])
            total = 0
        runs[-1].append(item)
        total += size
    return runs


def classify(items: Sequence[BulkItem], response_items: Sequence[dict[str, Any]]
             ) -> tuple[list[BulkItem], list[BulkItem], list[Rejection], list[BulkItem]]:
    """Split a bulk response into (indexed, to retry, rejected, superseded by a newer version)."""
    if len(response_items) != len(items):
        raise ValueError(f"bulk answered {len(response_items)} items for {len(items)} sent")
    done, retry, rejected, superseded = [], [], [], []
    for item, answer in zip(items, response_items, strict=True):
        result = next(iter(answer.values()))
        status = int(result.get("status", 0))
        error = result.get("error")
        if 200 <= status < 300:
            done.append(item)
        elif _superseded(item, status, error):
            superseded.append(item)
        elif _refused_for_now(status, error):
            retry.append(item)
        else:
            rejected.append(Rejection(item, status, _reason(error or f"status {status}")))
    return done, retry, rejected, superseded


class ElasticsearchSink:
    """Bulk-indexes documents by id (idempotent) with retries; see the module notes."""

    def __init__(self, settings: Settings, *, backoff: Backoff | None = None,
                 on_retry: Callable[[str], None] | None = None,
                 on_healthy: Callable[[], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.backoff = backoff or Backoff()
        self.on_retry = on_retry or (lambda reason: None)
        self.on_healthy = on_healthy or (lambda: None)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.client: Any = None

    async def start(self, *, apply_templates: bool = True) -> None:
        self.client = clients.async_elasticsearch(self.settings, request_timeout=30, max_retries=0)
        if apply_templates:
            attempt = 0
            while True:
                try:
                    await asyncio.to_thread(self._ensure_indices)
                    break
                except Exception as exc:  # noqa: BLE001 - any failure here means "not yet"
                    self.on_retry(f"templates: {exc}")
                    log.warning("Elasticsearch not ready for templates (%s); retrying", exc)
                    await self.sleep(self.backoff.delay(attempt, self.rng))
                    attempt += 1
        self.on_healthy()

    def _ensure_indices(self) -> None:
        with clients.elasticsearch(self.settings, request_timeout=30) as es:
            topology.ensure_indices(es, self.settings)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def ping(self) -> bool:
        try:
            await self.client.cluster.health(request_timeout=2)
            return True
        except Exception:  # noqa: BLE001 - health is a yes/no question
            return False

    async def index(self, index: str, items: Sequence[BulkItem]) -> list[Rejection]:
        """Index every item, none with a version (retrying as long as it takes); return the rejected ones."""
        if any(item.version is not None for item in items):
            raise ValueError("versioned items can be superseded: index them with index_versioned")
        rejected, _ = await self.index_versioned(index, items)
        return rejected

    async def index_versioned(self, index: str, items: Sequence[BulkItem]
                              ) -> tuple[list[Rejection], list[BulkItem]]:
        """Index every item (retrying as long as it takes); return the rejected ones and the versioned
        ones a newer version of which Elasticsearch already holds (superseded)."""
        rejected: list[Rejection] = []
        superseded: list[BulkItem] = []
        for run in cut(items, [request_bytes(index, item) for item in items], MAX_BULK_BYTES):
            refused, newer = await self._bulk(index, run)
            rejected += refused
            superseded += newer
        self.on_healthy()
        return rejected, superseded

    async def _bulk(self, index: str, items: list[BulkItem]) -> tuple[list[Rejection], list[BulkItem]]:
        """One bulk request of ``items``, retried until each is indexed, rejected or superseded."""
        from elastic_transport import ConnectionError as TransportConnectionError
        from elastic_transport import ConnectionTimeout
        from elasticsearch import ApiError

        pending = items
        rejected: list[Rejection] = []
        superseded: list[BulkItem] = []
        attempt = 0
        while pending:
            operations: list[dict[str, Any]] = []
            for item in pending:
                operations.append(action(index, item))
                operations.append(item.doc)
            try:
                response = await self.client.bulk(operations=operations)
            except (TransportConnectionError, ConnectionTimeout) as exc:
                why = f"connection: {exc}"
            except ApiError as exc:
                if exc.status_code == 413:  # over the cluster's limit: smaller requests, not the same again
                    refused, newer = await self._too_large(index, pending, exc)
                    return rejected + refused, superseded + newer
                if exc.status_code not in RETRYABLE_STATUS:
                    raise
                why = f"status {exc.status_code}: {exc.message}"
            else:
                _, pending, refused, newer = classify(pending, response["items"])
                rejected.extend(refused)
                superseded.extend(newer)
                if not pending:
                    break
                why = f"{len(pending)} items refused for now (first: {held_reason(response['items'])})"
            self.on_retry(why)
            delay = self.backoff.delay(attempt, self.rng)
            log.warning("Elasticsearch bulk into %s not done (%s); retrying in %.2fs", index, why, delay)
            await self.sleep(delay)
            attempt += 1
        return rejected, superseded

    async def _too_large(self, index: str, items: list[BulkItem], exc: Exception
                         ) -> tuple[list[Rejection], list[BulkItem]]:
        """The items of a request answered 413, sent again in halves; a document alone is rejected."""
        if len(items) == 1:
            return [Rejection(items[0], 413, f"the document alone is over Elasticsearch's request limit "
                                             f"(http.max_content_length): {exc}")], []
        log.warning("Elasticsearch refused a bulk request of %d items as too large; sending halves", len(items))
        middle = len(items) // 2
        first_refused, first_newer = await self._bulk(index, items[:middle])
        second_refused, second_newer = await self._bulk(index, items[middle:])
        return first_refused + second_refused, first_newer + second_newer
