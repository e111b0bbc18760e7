"""The one entry point, ``finsent``, with a subcommand group per part of the system.

Settings are loaded once here and handed to the commands through the typer context.
Heavy imports (torch, faust) happen inside the commands that need them, so ``finsent
--help`` and ``finsent services status`` stay fast.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys

import typer

from finsent.client_tracebacks import ClientTracebackFilter
from finsent.log_repeats import CLIENT_LOGGERS, RepeatFilter
from finsent.settings import SettingsError, load_settings

app = typer.Typer(
    name="finsent",
    help="Streaming financial-sentiment monitor: ingest → Kafka → scoring worker → Elasticsearch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# (command group, module holding its typer app, help)
_GROUPS = [
    ("services", "finsent.services.cli", "Local Kafka and Elasticsearch: up, down, status."),
    ("model", "model.cli", "Train, evaluate, serve and version the sentiment model."),
    ("ingest", "ingest.cli", "Pull or receive documents into Kafka."),
    ("stream", "stream.cli", "The scoring and indexing worker."),
    ("labels", "retrain.labels_cli", "Add and review labels."),
    ("retrain", "retrain.cli", "Drift checks, retraining and promotion."),
    ("alerts", "alerts.cli", "Alert rules and webhook delivery."),
    ("dlq", "finsent.dead_letters_cli", "Read the dead-letter topic; replay what would now pass."),
    ("dashboards", "dashboards.cli", "Kibana saved objects and the built-in dashboard."),
    ("bench", "bench.cli", "Benchmarks: scorer, pipeline, memory."),
]


@app.callback()
def _root(ctx: typer.Context) -> None:
    try:
        ctx.obj = load_settings()
    except SettingsError as exc:
        typer.echo(f"finsent: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=ctx.obj.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Client libraries log every connection at INFO, and every retry while a server is away at
    # WARNING or ERROR; keep the first out of our output and let the retries through once a minute.
    for noisy in CLIENT_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):  # the callback runs per command
            handler.addFilter(RepeatFilter())  # first: it reads the template the next one rewrites
            if ctx.obj.log_level != "DEBUG":
                handler.addFilter(ClientTracebackFilter())


for _name, _module, _help in _GROUPS:
    app.add_typer(importlib.import_module(_module).app, name=_name, help=_help)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create topics and indices, and train the first model if the registry has no champion."""
    from finsent import system
    from finsent.cli_support import fail, settings_of

    try:
        system.init(settings_of(ctx), echo=typer.echo)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        fail(f"init failed: {exc}")


@app.command()
def up(
    ctx: typer.Context,
    detach: bool = typer.Option(False, "--detach", "-d", help="Return after starting; stop with `finsent down`"),
) -> None:
    """The whole system on this machine: services, model, ingest, worker, scheduler, alerts, dashboard."""
    from finsent import system
    from finsent.cli_support import fail, settings_of

    settings = settings_of(ctx)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # stopped from outside, or its terminal closed: Ctrl-C's clean-up
        signal.signal(sig, signal.default_int_handler)
    try:
        started, starting = system.up(settings, echo=typer.echo)
    except KeyboardInterrupt:  # during the first model's training, say: leave nothing running behind
        typer.echo("\nstopping…")
        system.down(settings, echo=typer.echo)
        raise typer.Exit(130)
    except Exception as exc:  # noqa: BLE001
        fail(f"up failed: {exc}\n(`finsent down` stops whatever did start)")
    typer.echo("\nfinsent is up" + (f" ({', '.join(starting)} still starting: `finsent status` shows when)"
                                    if starting else "") + ":")
    typer.echo(f"  Kafka          {settings.kafka_bootstrap}")
    typer.echo(f"  Elasticsearch  {settings.elasticsearch_url}")
    for spec, proc in started:
        if spec.url:
            typer.echo(f"  {spec.name:<14} {spec.url}")
    if detach:
        return
    typer.echo("Ctrl-C stops everything.")
    try:
        system.watch(settings, started, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo("\nstopping…")
        system.down(settings, echo=typer.echo)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop every process `finsent up` started, then the local services."""
    from finsent import system
    from finsent.cli_support import settings_of

    system.down(settings_of(ctx), echo=typer.echo)


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """The whole system's health in one table; exit 1 if a service is unhealthy."""
    import json

    from finsent import system
    from finsent.cli_support import settings_of
    from finsent.cli_tables import Column, print_table, terminal_width

    rows = system.status(settings_of(ctx))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        # Below 100 columns the kind goes (the names say it) and "healthy" becomes "ok", so that the
        # detail keeps some width.
        wide_from = 100
        healthy = "healthy" if terminal_width() >= wide_from else "ok"
        columns = [Column("name"), Column("kind", from_width=wide_from), Column("pid"), Column(healthy),
                   Column("address"), Column("detail", whole=False)]
        print_table(columns, [
            [row["name"], row["kind"], str(row["pid"] or "-"),
             "-" if row["healthy"] is None else "yes" if row["healthy"] else "no",  # None: a one-shot
             row["address"], row["detail"]] for row in rows])
    if not all(row["healthy"] for row in rows if row["kind"] == "service"):
        raise typer.Exit(1)


@app.command()
def retention(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be deleted; delete nothing"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Delete scored documents and window aggregates older than their retention (the scheduler does this hourly)."""
    import json

    from finsent import clients, index_retention
    from finsent.cli_support import fail, settings_of
    from finsent.schemas import utc_now

    settings = settings_of(ctx)
    if not index_retention.is_on(settings):
        typer.echo("retention is off: FINSENT_DOCS_RETENTION_DAYS and FINSENT_AGGREGATES_RETENTION_DAYS are 0")
        return
    try:
        with clients.elasticsearch(settings) as es:
            outcomes = index_retention.run(es, settings, utc_now(), dry_run=dry_run)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        fail(f"retention failed: {type(exc).__name__}: {exc}")
    if as_json:
        typer.echo(json.dumps([{"index": o.deletion.index, "what": o.deletion.what, "matched": o.matched,
                                "deleted": o.deleted, "failed": o.failed, "errors": o.errors, "error": o.error}
                               for o in outcomes], indent=2))
    else:
        for o in outcomes:
            failed = f", {o.failed} failed" if o.failed else ""
            done = "would be deleted" if dry_run else f"deleted {o.deleted}{failed}"
            typer.echo(f"{o.deletion.index}: {o.matched} {o.deletion.what}: {done}"
                       + (f"; stopped by {o.error}" if o.error else ""))
    if not all(o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command()
def config(markdown: bool = typer.Option(False, "--markdown", help="The README's configuration table")) -> None:
    """Every FINSENT_* setting with its default and meaning."""
    from finsent import config_table

    if markdown:
        typer.echo(config_table.markdown())
        return
    for variable, default, description in config_table.rows():
        typer.echo(f"{variable}={default}    # {description}" if description else f"{variable}={default}")


def main() -> None:
    try:
        app()
    except OSError as exc:
        # A state folder that is a file, an output folder that is not there, a full disk: the message names the
        # path; the stack would only bury it. At DEBUG the traceback is kept, for a bug.
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        typer.echo(f"finsent: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # `python -m finsent.cli`, as the `finsent` script
    main()
