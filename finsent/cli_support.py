"""Helpers every command group shares: the settings of this process, and clean failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

from finsent.settings import Settings

if TYPE_CHECKING:
    import threading

    from finsent.stop_signals import StopSignals

T = TypeVar("T")


def settings_of(ctx: typer.Context) -> Settings:
    """The process's settings, loaded once by the root callback of ``finsent``."""
    return ctx.find_root().obj


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``finsent: message`` to stderr and exit with ``code``."""
    typer.echo(f"finsent: {message}", err=True)
    raise typer.Exit(code)


def stopped_while_starting(why: str, code: int = 0) -> None:
    """A stop (SIGTERM, Ctrl-C) came while the command was starting: say so and exit ``code``: 0, as a stop of a
    long-running command does later; a one-shot command's is ``stop_signals.stopped_status``, its work not done."""
    typer.echo(f"finsent: stopped while starting ({why})", err=True)
    raise typer.Exit(code)


def stop_signals(ctx: typer.Context, then: threading.Event | None = None) -> StopSignals:
    """SIGTERM and Ctrl-C recorded from now on (``StopSignals``: the first puts the previous handlers back, so a
    second one ends the process at once), and put back when the command ends without one: a command run in the
    process (a test's) would otherwise leave its handler to swallow the next."""
    from finsent.stop_signals import StopSignals

    signals = StopSignals(then=then)
    ctx.call_on_close(signals.restore)
    return signals


def start_or_exit(start: Callable[[], T], signals: StopSignals, not_done: str, *,
                  failed: Callable[[Exception], None] | None = None, one_shot: bool = True) -> T:
    """``start()``'s result, run in a daemon thread that a stop leaves behind (``start_unless_stopped``): a stop
    meanwhile ends the command at once with ``stopped_while_starting(not_done)``, exit 128 + the signal's number, or
    0 for a long-running command (``one_shot`` False). ``start``'s exception goes to ``failed`` (which exits: it is
    called here, as a ``typer.Exit`` is an ``Exception`` a caller's ``except`` would catch), or is raised."""
    from finsent.stop_signals import StoppedWhileStarting, start_unless_stopped, stopped_status

    try:
        return start_unless_stopped(start, signals)
    except StoppedWhileStarting:
        stopped_while_starting(not_done, code=stopped_status(signals) if one_shot else 0)
    except Exception as exc:
        if failed is None:
            raise
        failed(exc)
    raise AssertionError("stopped_while_starting and failed exit")


def stopped_before_the_end(signals, what: str) -> NoReturn:
    """A one-shot command stopped by a signal before its end, with what it produced flushed: say what was done and
    what was not (``what``), and exit 128 + the signal's number (``stop_signals.stopped_status``)."""
    from finsent.stop_signals import signal_name, stopped_status

    typer.echo(f"finsent: stopped by {signal_name(signals)}: {what}", err=True)
    raise typer.Exit(stopped_status(signals))
