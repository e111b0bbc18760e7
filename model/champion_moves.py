"""The steps of `finsent model promote`, `rollback`, `train --promote` and `calibrate --promote` around the
registry's move of the champion: the ONNX export the workers need, built before it; the control message that tells
them, sent after it; and what a stop (SIGTERM, Ctrl-C) between the steps leaves and says. Before the move a stop
changes nothing (`train --promote`'s new version stays registered); after it the command ends at once with a line
that names the new champion and the command that tells the workers (a worker that has the move ignores it when told
again). Either way the exit status is 128 + the signal's number. Without a stop, a control message that Kafka does
not take leaves the champion moved and the workers untold: a warning names the command that tells them, and the
command exits ``WORKERS_NOT_TOLD``.
``train --promote`` takes all three steps (``promote_registered``, then ``announce``); ``calibrate --promote`` uses the
last one only: its copy carries the source version's export.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from finsent.cli_support import fail, start_or_exit, stopped_before_the_end
from finsent.settings import Settings

if TYPE_CHECKING:
    from finsent.stop_signals import StopSignals
    from model.registry import Pointer, Registry

# Exit status of a command that moved the champion but could not tell the running workers (Kafka away): not 0, so a
# deploy script's `promote V && ...` does not go on as if they score with V; not 1, as the move stands. The same
# status as `finsent retrain run`'s promotion that was not announced.
WORKERS_NOT_TOLD = 4


def ensure_export(settings: Settings, path: Path, signals: StopSignals) -> None:
    """Workers that score in onnx-int8 load a model's ONNX export. Build it here when it is missing, before they are
    told, as a retrain does: otherwise each worker builds it in a one-off process of its own, torch and all
    (model.scorer_process). In a process of its own, which a stop kills (``ExportStopped``), partial files and all:
    in this one, ``torch.onnx.export`` cannot be cut short, and a SIGTERM left them in the model's cache."""
    from model.onnx_runtime import export_apart, export_missing

    if not export_missing(settings.model_quantize, path):
        return
    typer.echo(f"building the ONNX export of {path.name} for the workers (FINSENT_MODEL_QUANTIZE=onnx-int8) ...")
    export_apart(path, should_stop=lambda: bool(signals.received))


def promote_registered(settings: Settings, registry: Registry, version: str, signals: StopSignals,
                       previous: str | None) -> Pointer:
    """Make VERSION, which this command registered (``train --promote``), the champion as ``promote`` does: its ONNX
    export first where the workers need one, then the move. Short of the move, VERSION stays registered and the
    champion as it was; the line says so and names the command that promotes it later: after a stop, exit 128 + the
    signal's number, after a failed export or move, 1."""
    from model.onnx_runtime import ExportStopped
    from model.registry import RegistryError

    not_promoted = f"{version} is registered but not promoted"
    later = f"the champion is still {previous or 'none'}; `finsent model promote {version}` makes it champion"
    try:
        ensure_export(settings, registry.path(version), signals)
    except ExportStopped:
        stopped_before_the_end(signals, f"{not_promoted}: stopped while its ONNX export was built; {later}")
    except Exception as exc:  # the workers could not load it either
        fail(f"{not_promoted}: its ONNX export failed ({exc}); {later}")
    if signals.received:
        stopped_before_the_end(signals, f"{not_promoted}; {later}")
    try:
        return registry.promote(version)
    except RegistryError as exc:
        fail(f"{not_promoted}: {exc}")


def open_registry_or_exit(settings: Settings, signals: StopSignals) -> Registry:
    """The registry, its mirror checked (up to 5 s when Elasticsearch does not answer); a stop meanwhile ends the
    command with nothing changed."""
    from finsent.settings import without_credentials
    from model.registry import open_registry

    return start_or_exit(lambda: open_registry(settings, mirror=True), signals, "still connecting to Elasticsearch "
                         f"at {without_credentials(settings.elasticsearch_url)}; nothing was changed")


def unchanged(signals: StopSignals, what: str, champion: str | None) -> None:
    """Stopped before the pointer moved: say so, and exit 128 + the signal's number."""
    stopped_before_the_end(signals, f"{what}; nothing was changed: the champion is still {champion or 'none'}")


def announce(settings: Settings, action: str, moved: Pointer, path: Path, previous: str | None,
             signals: StopSignals) -> bool:
    """Tell running workers (finsent.control) to load the new champion, with the number of its move (a worker
    ignores a move older than one it has). Whether Kafka took the message: when it did not, a warning says how to
    tell the workers, and the caller ends with ``exit_if_untold``. A stop while Kafka is still connecting (up to
    30 s) or the message is sent ends the command at once, with the pointer moved and a line that says so and how to
    tell the workers: sent again, a move a worker has is ignored."""
    from finsent.schemas import ControlMessage, utc_now
    from finsent.stop_signals import StoppedWhileStarting, start_unless_stopped
    from stream.control import publish

    message = ControlMessage(action=action, model_version=moved.champion, model_path=str(path),
                             reason=f"finsent model {action}", issued_at=utc_now(), **moved.control_fields())
    again = f"`finsent model promote {moved.champion}` tells them"
    try:
        start_unless_stopped(lambda: publish(settings, message), signals)
    except StoppedWhileStarting:
        untold(settings, moved.champion, previous, signals)
    except Exception as exc:
        typer.echo(f"warning: could not tell workers on {settings.topic('control')} ({exc}); "
                   f"they load the champion when they restart, or {again}", err=True)
        return False
    return True


def exit_if_untold(told: bool) -> None:
    """The end of a command whose champion moved: exit ``WORKERS_NOT_TOLD`` when the workers were not told."""
    if not told:
        raise typer.Exit(WORKERS_NOT_TOLD)


def untold(settings: Settings, champion: str, previous: str | None, signals: StopSignals) -> None:
    """Stopped after the pointer moved and before the workers were told: the state it leaves, and what to run."""
    moved = (f"the champion is now {champion} (was {previous or 'none'})" if previous != champion
             else f"the champion is {champion}, as before")
    scoring = f"; they score with {previous} until they restart" if previous and previous != champion else ""
    stopped_before_the_end(signals, f"{moved}, but running workers were not told: the control message on "
                                    f"{settings.topic('control')} was not confirmed sent{scoring}; run `finsent "
                                    f"model promote {champion}` to tell them (a worker that has the move ignores it)")


def champion_of(registry: Registry) -> str | None:
    """The champion before the move, for the line a stop prints; None when the pointer is unreadable (the move then
    fails and says why)."""
    from model.registry import RegistryError

    try:
        return registry.champion()
    except RegistryError:
        return None
