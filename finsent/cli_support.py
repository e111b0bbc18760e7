"""Helpers every command group shares: the settings of this process, and clean failures."""

from __future__ import annotations

import typer

from finsent.settings import Settings


def settings_of(ctx: typer.Context) -> Settings:
    """The process's settings, loaded once by the root callback of ``finsent``."""
    return ctx.find_root().obj


def fail(message: str, code: int = 1) -> None:
    """Print ``finsent: message`` to stderr and exit with ``code``."""
    typer.echo(f"finsent: {message}", err=True)
    raise typer.Exit(code)


def stopped_while_starting(why: str) -> None:
    """A stop (SIGTERM, Ctrl-C) came while the command was starting: say so and exit 0, as a stop does later."""
    typer.echo(f"finsent: stopped while starting ({why})", err=True)
    raise typer.Exit(0)
