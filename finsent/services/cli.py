"""`finsent services up|down|status` and `finsent services init`."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from finsent.cli_support import fail, settings_of
from finsent.cli_tables import Column, print_table
from finsent.services import manager
from finsent.services.process import ServiceError

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def up(ctx: typer.Context, no_init: bool = typer.Option(False, "--no-init", help="Skip topic/index bootstrap")) -> None:
    """Start the local Kafka and Elasticsearch (idempotent) and wait until both are healthy."""
    settings = settings_of(ctx)
    try:
        entries = manager.up(settings, bootstrap=not no_init, echo=lambda m: console.print(m))
    except ServiceError as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. init against a cluster that refuses: one clear line
        fail(f"services up failed: {exc}")
    for entry in entries:
        console.print(f"[green]{entry.name}[/green] {entry.address} pid={entry.pid} {entry.detail}")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the processes that `up` started (by pid)."""
    manager.down(settings_of(ctx), echo=lambda m: console.print(m))


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """Show addresses, pids and health; exit 1 when a service is not healthy."""
    settings = settings_of(ctx)
    report = manager.status_json(settings)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_table([Column("service"), Column("address"), Column("pid"), Column("healthy"),
                     Column("detail", whole=False)],
                    ([e["name"], e["address"], str(e["pid"] or "-"), "yes" if e["healthy"] else "no", e["detail"]]
                     for e in report["services"].values()))
    if not report["healthy"]:
        raise typer.Exit(1)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create topics and index templates/indices on the configured cluster (idempotent)."""
    try:
        manager.init(settings_of(ctx), echo=lambda m: console.print(m))
    except Exception as exc:  # noqa: BLE001 - report connection problems as one clear line
        fail(str(exc))
