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


def stopped_while_starting(why: str, code: int = 0) -> None:
    """A stop (SIGTERM, Ctrl-C) came while the command was starting: say so and exit ``code``: 0, as a stop of a
    long-running command does later; a one-shot command's is ``stop_signals.stopped_status``, its work not done."""
    typer.echo(f"finsent: stopped while starting ({why})", err=True)
    raise typer.Exit(code)


def stopped_before_the_end(signals, what: str) -> None:
    """A one-shot command stopped by a signal before its end, with what it produced flushed: say what was done and
    what was not (``what``), and exit 128 + the signal's number (``stop_signals.stopped_status``)."""
    from finsent.stop_signals import signal_name, stopped_status

    typer.echo(f"finsent: stopped by {signal_name(signals)}: {what}", err=True)
    raise typer.Exit(stopped_status(signals))
