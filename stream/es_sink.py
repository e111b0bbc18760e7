"""Async bulk sink into Elasticsearch that never drops a document.

Each item of a bulk response is judged on its own:

* indexed (2xx) → done;
* rejected for what it is (400 mapping/parse errors and other 4xx) → returned as a
  rejection with the reason, for the caller's dead-letter queue;
* refused for now (429, 5xx, and a write block on the whole index: 403 ``cluster_block_exception``)
  → retried after a jittered exponential back-off.

Connection errors, timeouts and 429/5xx answers to the whole request are retried the same
way, forever: the call only returns once every document is indexed or rejected, which is
what holds the stream (backpressure) while Elasticsearch is away.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finsent import clients, topology
from finsent.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# An index an operator made read-only or write-blocked (before a shrink or a reindex) refuses every
# document alike: hold the stream until the block is lifted, rather than dead-letter the lot.
INDEX_BLOCKED = "cluster_block_exception"


@dataclass(frozen=True)
class BulkItem:
    id: str
    doc: dict[str, Any]


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


def classify(items: Sequence[BulkItem], response_items: Sequence[dict[str, Any]]
             ) -> tuple[list[BulkItem], list[BulkItem], list[Rejection]]:
    """Split a bulk response into (indexed, to retry, rejected)."""
    if len(response_items) != len(items):
        raise ValueError(f"bulk answered {len(response_items)} items for {len(items)} sent")
    done, retry, rejected = [], [], []
    for item, answer in zip(items, response_items, strict=True):
        result = next(iter(answer.values()))
        status = int(result.get("status", 0))
        error = result.get("error")
        if 200 <= status < 300:
            done.append(item)
        elif status in RETRYABLE_STATUS or (isinstance(error, dict) and error.get("type") == INDEX_BLOCKED):
            retry.append(item)
        else:
            rejected.append(Rejection(item, status, _reason(error or f"status {status}")))
    return done, retry, rejected


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
        """Index every item (retrying as long as it takes); return the rejected ones."""
        from elastic_transport import ConnectionError as TransportConnectionError
        from elastic_transport import ConnectionTimeout
        from elasticsearch import ApiError

        pending = list(items)
        rejected: list[Rejection] = []
        attempt = 0
        while pending:
            operations: list[dict[str, Any]] = []
            for item in pending:
                operations.append({"index": {"_index": index, "_id": item.id}})
                operations.append(item.doc)
            try:
                response = await self.client.bulk(operations=operations)
            except (TransportConnectionError, ConnectionTimeout) as exc:
                why = f"connection: {exc}"
            except ApiError as exc:
                if exc.status_code not in RETRYABLE_STATUS:
                    raise
                why = f"status {exc.status_code}: {exc.message}"
            else:
                _, pending, refused = classify(pending, response["items"])
                rejected.extend(refused)
                if not pending:
                    break
                why = f"{len(pending)} items refused for now"
            self.on_retry(why)
            delay = self.backoff.delay(attempt, self.rng)
            log.warning("Elasticsearch bulk into %s not done (%s); retrying in %.2fs", index, why, delay)
            await self.sleep(delay)
            attempt += 1
        self.on_healthy()
        return rejected
