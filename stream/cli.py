"""``finsent stream worker``: run the scoring and indexing worker until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

import typer

from finsent.cli_support import fail, settings_of

app = typer.Typer(no_args_is_help=True)


@app.command()
def worker(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", help="champion (default: FINSENT_WORKER_MODEL), a version or a path"),
    web_port: int = typer.Option(None, "--web-port", help="Port of /metrics and /health (FINSENT_WORKER_WEB_PORT)"),
) -> None:
    """Consume raw documents, score them in batches, index them; stops cleanly on SIGTERM."""
    settings = settings_of(ctx)
    if web_port is not None and not 1 <= web_port <= 65535:
        fail(f"--web-port {web_port} is not a port number")
    import faust

    from model.registry import Registry, RegistryError
    from stream.app import create_app
    from stream.window_partitions import WindowPartitionsMismatch, window_partitions

    ref = model or settings.worker_model
    try:  # fail now, with the reason, rather than start a worker that cannot score
        Registry(settings.models_path).path(ref)
    except RegistryError as exc:
        fail(f"no model to score with: {exc} (train one with `finsent model train`, or pass --model PATH)")

    try:
        partitions = window_partitions(settings)
    except WindowPartitionsMismatch as exc:
        fail(str(exc))
    (settings.state_dir / "stream").mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    faust_app = create_app(settings, model_ref=model, web_port=web_port, window_partitions=partitions)
    # mode's Worker installs SIGTERM/SIGINT handlers that stop the app: the agents stop, acked
    # offsets are committed, the producer is flushed; a batch still in flight is not acked and
    # is delivered again to whoever owns its partition next.
    runner = faust.Worker(faust_app, loglevel=settings.log_level, override_logging=False, quiet=True)
    if not sys.stdout.isatty():  # the spinner is a terminal's: into a log file it writes escape codes
        runner.spinner = None
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
        raise typer.Exit(code) from None
