"""Running sources: one poll of each (``--once``), or polling forever with backoff, until SIGTERM/SIGINT.

A stop signal lets the batch in flight finish (it waits for Kafka's acknowledgement),
then the producer is flushed and closed: nothing acknowledged to a source is lost. A stop during ``--once`` leaves
out the sources not polled yet, and the command says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from finsent.settings import Settings
from ingest.backoff import Backoff
from ingest.pipeline import BatchReport, Pipeline
from ingest.sources.base import Source
from ingest.sources.http import FetchError

log = logging.getLogger(__name__)


async def poll(source: Source, pipeline: Pipeline) -> BatchReport:
    """Fetch once and process what came; FetchError propagates (after counting it)."""
    metrics = pipeline.metrics
    started = time.perf_counter()
    try:
        result = await source.fetch()
    except FetchError as exc:
        metrics.errors.labels(source.name, "fetch", exc.reason).inc()
        raise
    finally:
        metrics.fetch_seconds.labels(source.name).observe(time.perf_counter() - started)
    if result.not_modified:
        log.debug("%s: not modified", source.name)
    report = await pipeline.submit(source.name, result)
    log.info("%s: fetched %d, produced %d, duplicates %d, skipped %d, failed %d, held back %d", source.name,
             report.fetched, report.produced, report.duplicates, len(report.rejected), len(report.failed),
             report.held_back)
    return report


@dataclass
class OnceReport:
    """What one poll of each source did (``--once``)."""

    total: BatchReport = field(default_factory=BatchReport)  # the polls' reports added up
    errors: int = 0  # polls that failed
    not_polled: list[str] = field(default_factory=list)  # sources a stop came before, by name


async def poll_once(sources: list[Source], pipeline: Pipeline, on_error: Callable[[Source, str], None],
                    stop: asyncio.Event | None = None) -> OnceReport:
    """Poll each source once (``--once``).

    A poll that fails, for whatever reason, is told to ``on_error`` in one line; the other
    sources still run. A ``stop`` ends the round between two sources: the poll under way finishes (its batch
    acknowledged by Kafka, or not), the sources after it are left out."""
    once = OnceReport()
    for n, source in enumerate(sources):
        # One turn of the loop first: a signal that came during the last poll is queued behind that poll's own
        # wake-up, and its handler (which sets ``stop``) runs only once this coroutine yields.
        await asyncio.sleep(0)
        if stop is not None and stop.is_set():
            once.not_polled = [later.name for later in sources[n:]]
            break
        try:
            once.total.add(await poll(source, pipeline))
        except FetchError as exc:
            once.errors += 1
            on_error(source, f"fetch failed: {exc.detail}")
        except Exception as exc:  # a bug in one source: the others still run, and no traceback ends the command
            once.errors += 1
            log.debug("%s: unexpected error", source.name, exc_info=True)
            pipeline.metrics.errors.labels(source.name, "fetch", "unexpected").inc()
            on_error(source, f"unexpected error: {type(exc).__name__}: {exc} (FINSENT_LOG_LEVEL=DEBUG shows where)")
    return once


async def poll_forever(source: Source, pipeline: Pipeline, stop: asyncio.Event, *,
                       backoff: Backoff | None = None, on_report: Callable[[BatchReport], None] | None = None) -> None:
    backoff = backoff or Backoff(cap=pipeline.settings.ingest_backoff_max)
    failing = pipeline.metrics.failing_polls.labels(source.name)
    failing.set(0)
    while not stop.is_set():
        try:
            report = await poll(source, pipeline)
        except FetchError as exc:
            failing.inc()
            delay = backoff.failure(exc.retry_after)
            log.warning("%s: %s; retrying in %.1fs", source.name, exc.detail, delay)
        except Exception:  # a bug in one source must not stop the others
            failing.inc()
            delay = backoff.failure()
            log.exception("%s: unexpected error; retrying in %.1fs", source.name, delay)
            pipeline.metrics.errors.labels(source.name, "fetch", "unexpected").inc()
        else:
            failing.set(0)
            if report.failed:  # Kafka trouble: retry the same items sooner than the interval
                delay = backoff.failure()
            else:
                backoff.success()
                delay = source.interval
            if on_report is not None:
                on_report(report)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


def start_metrics_server(registry, port: int, settings: Settings) -> None:
    """Serve /metrics on ``FINSENT_METRICS_HOST:port`` (port 0: off). A busy port is logged, not fatal: ingest
    matters more."""
    if not port:
        return
    from finsent.metrics_server import serve_metrics

    try:
        serve_metrics(registry, port, settings)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    except OSError as exc:
        log.warning("cannot serve metrics on port %d: %s", port, exc)
