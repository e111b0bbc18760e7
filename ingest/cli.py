"""``finsent ingest …``: pull or receive documents into Kafka.

Polling commands run until SIGTERM/SIGINT (then flush and exit 0) unless ``--once``; each
prints what it did. Exit status 1 when a fetch or a Kafka delivery failed. A stop while Kafka still does not answer
(its client retries for 30 s) exits 0 at once too, with "stopped while starting" (``finsent/stop_signals.py``).

The one-shot commands (``--once``, ``file``) stop on SIGTERM/SIGINT at the next source or line: what was produced is
flushed, the counts are printed, a line says what was left, and the exit status is 128 + the signal's number (143 for
SIGTERM, 130 for Ctrl-C), as when the signal killed them, so that a script sees the work is not all done; the same
status when the stop came while Kafka was still being connected to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from finsent import clients
from finsent.cli_support import fail, settings_of, start_or_exit, stopped_before_the_end
from finsent.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Pull or receive documents into Kafka.")

Once = Annotated[bool, typer.Option("--once", help="Poll each source once, then exit.")]
# min: ingest.config.MIN_INTERVAL, which sources.yml keeps to (not imported: it would load pydantic for --help)
Interval = Annotated[float | None, typer.Option("--interval", min=0.1, help="Seconds between polls.")]
MetricsPort = Annotated[int | None, typer.Option("--metrics-port", min=0, max=65535,
                                                 help="Port of /metrics (default FINSENT_INGEST_METRICS_PORT; 0: off).")]


def _summary(label: str, report, errors: int = 0) -> str:
    return (f"{label}: fetched {report.fetched}, produced {report.produced}, duplicates {report.duplicates}, "
            f"skipped {len(report.rejected)}, failed {len(report.failed)}, held back {report.held_back}, "
            f"fetch errors {errors}")


def _start(settings: Settings, signals, *, one_shot: bool, **build):
    """The started pipeline. A stop (recorded by ``signals``) that comes while Kafka is still being connected to ends
    the command at once: with 0, or with a one-shot command's status (module docstring)."""
    from prometheus_client import CollectorRegistry

    from ingest.pipeline import Pipeline

    registry = CollectorRegistry()
    try:
        pipeline = Pipeline.build(settings, registry, **build)
    except (OSError, ValueError) as exc:
        fail(f"cannot load the ticker dictionary: {exc}")

    def failed(exc: Exception) -> None:  # no broker, bad credentials…: say so, do not dump a trace
        pipeline.close()
        fail(f"cannot connect to Kafka at {settings.kafka_bootstrap}: {clients.error_text(exc)}")

    # A stop while starting leaves the start going on in a daemon thread: the pipeline is not closed under it.
    start_or_exit(pipeline.start, signals, f"still connecting to Kafka at {settings.kafka_bootstrap}; nothing was "
                                           "ingested", one_shot=one_shot, failed=failed)
    return pipeline


def _fetcher(settings: Settings):
    from ingest.sources.http import HttpFetcher

    return HttpFetcher(timeout=settings.ingest_fetch_timeout, max_bytes=settings.ingest_max_fetch_bytes,
                       user_agent=settings.ingest_user_agent, internal_addresses=settings.ingest_internal_addresses)


def _push_auth(settings: Settings):
    """The push endpoint's tokens, checked before Kafka is connected to: a bad tokens file stops the command."""
    from ingest.push_tokens import PushAuth

    try:
        return PushAuth.from_settings(settings)
    except ValueError as exc:
        fail(str(exc))


def _run_sources(settings: Settings, make_sources, *, once: bool, metrics_port: int | None,
                 push=None) -> None:
    """Run polling sources (and optionally the push endpoint) until stopped, or once."""
    from finsent.stop_signals import StopSignals, install_stop_handlers
    from ingest.runner import poll_forever, poll_once, start_metrics_server

    push_auth = _push_auth(settings) if push is not None else None
    signals = StopSignals()  # recorded from here until the event loop's handlers take over
    pipeline = _start(settings, signals, one_shot=once)
    http = _fetcher(settings)
    not_polled: list[str] = []

    async def main() -> int:
        sources = make_sources(http)
        try:
            stop = asyncio.Event()
            install_stop_handlers(stop, signals, second_ends=once)  # and a stop that came after the start
            if once:
                done = await poll_once(sources, pipeline,
                                       lambda source, why: typer.echo(f"{source.name}: {why}", err=True), stop)
                typer.echo(_summary("ingest", done.total, done.errors))
                not_polled.extend(done.not_polled)
                return 1 if done.errors or done.total.failed else 0
            tasks = [poll_forever(source, pipeline, stop) for source in sources]
            if push is not None:
                from ingest.push import make_app, serve

                tasks.append(serve(make_app(pipeline, settings, auth=push_auth, bind_host=push.host), push.host,
                                   push.port, settings, stop))
            else:
                port = settings.ingest_metrics_port if metrics_port is None else metrics_port
                start_metrics_server(pipeline.metrics.registry, port, settings)
            await asyncio.gather(*tasks)
            return 0
        finally:
            await http.close()

    try:
        code = asyncio.run(main())
    finally:
        pipeline.close()  # flushes the producer: SIGTERM never loses an acknowledged batch
    if not_polled:
        stopped_before_the_end(signals, f"{len(not_polled)} source(s) not polled ({', '.join(not_polled)}); run the "
                                        "command again to poll them (the documents produced count as duplicates then)")
    raise typer.Exit(code)


@app.command()
def rss(ctx: typer.Context, urls: Annotated[list[str], typer.Argument(help="Feed URLs")], once: Once = False,
        interval: Interval = None, metrics_port: MetricsPort = None) -> None:
    """Poll RSS/Atom feeds (conditional GET, backoff, Retry-After)."""
    from finsent.settings import without_credentials
    from ingest.sources.http import url_problem
    from ingest.sources.rss import RssSource

    settings = settings_of(ctx)
    bad = [f"{without_credentials(u)}: {problem}" for u in urls if (problem := url_problem(u))]
    if bad:
        fail("; ".join(bad))
    every = interval or settings.ingest_poll_interval
    _run_sources(settings, lambda http: [RssSource(http, u, interval=every) for u in urls],
                 once=once, metrics_port=metrics_port)


@app.command()
def api(ctx: typer.Context, config: Annotated[Path, typer.Option("--config", exists=True, dir_okay=False,
                                                               help="YAML: name, url, items, fields, headers…")],
        once: Once = False, interval: Interval = None, metrics_port: MetricsPort = None) -> None:
    """Poll a JSON news API described by a field-mapping file."""
    from ingest.config import api_source, load_api_config

    settings = settings_of(ctx)
    try:
        entry = load_api_config(config)
    except ValueError as exc:
        fail(str(exc))
    if interval:
        entry.interval = interval
    _run_sources(settings, lambda http: [api_source(entry, http, settings)], once=once, metrics_port=metrics_port)


@app.command()
def reddit(ctx: typer.Context, subreddits: Annotated[list[str], typer.Argument(help="e.g. stocks investing")],
           once: Once = False, interval: Interval = None, metrics_port: MetricsPort = None) -> None:
    """Poll subreddits' new posts (base URL: FINSENT_REDDIT_BASE_URL)."""
    from ingest.sources.reddit import RedditSource

    settings = settings_of(ctx)
    every = interval or settings.ingest_poll_interval
    _run_sources(settings, lambda http: [RedditSource(http, s, base_url=settings.reddit_base_url, interval=every)
                                         for s in subreddits], once=once, metrics_port=metrics_port)


@app.command()
def stocktwits(ctx: typer.Context, symbols: Annotated[list[str], typer.Argument(help="e.g. AAPL TSLA")],
               once: Once = False, interval: Interval = None, metrics_port: MetricsPort = None) -> None:
    """Poll StockTwits symbol streams (base URL: FINSENT_STOCKTWITS_BASE_URL)."""
    from ingest.sources.stocktwits import StockTwitsSource

    settings = settings_of(ctx)
    every = interval or settings.ingest_poll_interval
    _run_sources(settings, lambda http: [StockTwitsSource(http, s, base_url=settings.stocktwits_base_url,
                                                          interval=every) for s in symbols],
                 once=once, metrics_port=metrics_port)


@app.command()
def run(ctx: typer.Context, config: Annotated[Path, typer.Option("--config", exists=True, dir_okay=False,
                                                               help="sources.yml (see ingest/config.py)")],
        once: Once = False, metrics_port: MetricsPort = None) -> None:
    """Run every source of a YAML file (and its push endpoint, if it has one)."""
    from ingest.config import build_sources, load_sources_file

    settings = settings_of(ctx)
    try:
        parsed = load_sources_file(config)
    except ValueError as exc:
        fail(str(exc))
    try:
        build_sources(parsed, _fetcher(settings), settings)  # their names are checked before Kafka is connected to
    except ValueError as exc:
        fail(f"{config}: {exc}")
    if not parsed.sources and parsed.push is None:
        fail(f"{config}: no sources and no push endpoint")
    if parsed.push is not None and not once:
        from ingest.push import ensure_token

        settings = ensure_token(settings)
    _run_sources(settings, lambda http: build_sources(parsed, http, settings), once=once,
                 metrics_port=metrics_port, push=None if once else parsed.push)


@app.command()
def serve(ctx: typer.Context,
          port: Annotated[int | None, typer.Option("--port", min=1, max=65535,
                                                   help="Port to bind (default: FINSENT_PUSH_PORT)")] = None,
          host: Annotated[str, typer.Option("--host", help="Address to bind (0.0.0.0 for all)")] = "127.0.0.1",
          require_token: Annotated[bool, typer.Option(
              "--require-token", help="Refuse to start without FINSENT_PUSH_TOKEN or FINSENT_PUSH_TOKENS_FILE "
                                      "rather than generate a token (docker-compose.yml)")] = False) -> None:
    """HTTP push endpoint: POST /documents with a bearer token (FINSENT_PUSH_TOKEN, a sender's own from
    FINSENT_PUSH_TOKENS_FILE, else a generated one kept in <state_dir>/ingest/push-token)."""
    from ingest.config import PushConfig

    from ingest.push import ensure_token

    settings = settings_of(ctx)
    if not require_token:
        settings = ensure_token(settings)  # else _push_auth refuses settings without a token, before Kafka
    push = PushConfig(host=host, port=settings.push_port if port is None else port)
    _run_sources(settings, lambda http: [], once=False, metrics_port=0, push=push)


@app.command("file")
def file_(ctx: typer.Context, path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
          rate: Annotated[float | None, typer.Option("--rate", min=0.001, help="Documents per second")] = None,
          speed: Annotated[float | None, typer.Option("--speed", min=0.001, help="×N the original pace")] = None,
          fmt: Annotated[str | None, typer.Option("--format", help="jsonl or csv (default: by extension)")] = None,
          source: Annotated[str, typer.Option("--source", help="source of lines that name none")] = "replay",
          no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Produce every line, even repeats "
                                                                    "(benchmarks)")] = False) -> None:
    """Replay a JSONL or CSV file into Kafka; exits at the end of the file and prints the counts."""
    from finsent.stop_signals import StopSignals
    from ingest.replay import file_problem, holds_no_records, replay
    from finsent.stop_signals import install_stop_handlers

    settings = settings_of(ctx)
    if rate is not None and speed is not None:
        fail("give --rate or --speed, not both")
    if fmt not in (None, "jsonl", "csv"):
        fail(f"--format must be jsonl or csv, not {fmt!r}")
    try:  # before Kafka, which takes half a minute to be found down
        empty = holds_no_records(path, fmt)
        problem = None if empty else file_problem(path, fmt)
    except OSError as exc:
        empty, problem = False, f"cannot read it: {exc.strerror or exc}"
    if problem:
        fail(f"{path}: {problem}")
    if empty:  # nothing went wrong and nothing is to be done: exit 0, as a replay that produced nothing did
        typer.echo(f"{path}: holds no records (empty, blank lines only, or a CSV header alone); nothing to replay")
        raise typer.Exit(0)
    signals = StopSignals()
    pipeline = _start(settings, signals, one_shot=True, dedup=not no_dedup)

    async def main():
        stop = asyncio.Event()
        install_stop_handlers(stop, signals, second_ends=True)
        return await replay(path, pipeline, rate=rate, speed=speed, fmt=fmt, source=source, stop=stop)

    try:
        report = asyncio.run(main())
    finally:
        pipeline.close()
    typer.echo(_summary(str(path), report))
    if report.stopped_at is not None:
        again = ("the lines produced count as duplicates then" if not no_dedup
                 else "with --no-dedup, the lines produced are produced again")
        stopped_before_the_end(signals, f"the replay ended before {report.stopped_at}; run it again to go on ({again})")
    raise typer.Exit(1 if report.failed else 0)
