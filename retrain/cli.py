"""``finsent retrain check|run|scheduler|golden``."""

from __future__ import annotations

import json

import typer

from finsent.cli_support import fail, settings_of, start_or_exit, stop_signals, stopped_before_the_end

app = typer.Typer(no_args_is_help=True, help="Drift checks, retraining and promotion.")


def _context(settings, signals, nothing: str):
    """The clients, connected in a thread that a stop leaves behind (Kafka's bootstrap retries for 30 s): a stop then
    ends the command at once, saying ``nothing`` was done, with 128 + the signal's number."""
    from finsent import clients
    from finsent.settings import without_credentials
    from retrain.context import Context

    return start_or_exit(lambda: Context.open(settings), signals,
                         f"still connecting to Kafka at {settings.kafka_bootstrap} or Elasticsearch at "
                         f"{without_credentials(settings.elasticsearch_url)}; {nothing}",
                         failed=lambda exc: fail(f"could not connect to Kafka/Elasticsearch: "
                                                 f"{clients.error_text(exc)}"))


def _stopped_retrain(signals, outcome) -> None:
    """A retrain the stop ended while it trained or judged: the champion stays, the challenger is deleted (its
    reasons say so, or why it stays), and it counts as no attempt, so the next run starts it again at once."""
    stopped_before_the_end(signals, f"the retrain did not finish; the champion is still {outcome.champion_version} "
                                    "(a stopped retrain is no attempt: run the command again to retrain)")


@app.command()
def check(
    ctx: typer.Context,
    then_retrain: bool = typer.Option(False, "--retrain", help="Retrain now if drift is found (and enough labels)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run every drift monitor once, record the figures, publish a drift message if any fired.

    Exit status: 0 no drift, 3 drift found, 1 or 2 an error. SIGTERM or Ctrl-C stops the check before it records
    anything (at the next scoring batch), or a retrain after it as `finsent retrain run`'s: 128 + the signal's
    number (143, 130)."""
    from retrain.drift_check import CheckStopped, run_check
    from retrain.retraining import run_retrain

    settings = settings_of(ctx)
    signals = stop_signals(ctx)
    stopped = lambda: bool(signals.received)  # noqa: E731 - asked between steps
    with _context(settings, signals, "nothing was checked") as rctx:
        try:
            report = run_check(rctx, should_stop=stopped)
        except CheckStopped as exc:
            stopped_before_the_end(signals, f"{exc}: nothing was recorded or published; run it again")
        if then_retrain and report.drift_detected and stopped():  # recorded and published; no retrain begun
            typer.echo(report.summary())
            stopped_before_the_end(signals, "drift found, recorded and published; the retrain was not started: run "
                                            "`finsent retrain run`")
        outcome = run_retrain(rctx, trigger="drift", drift_detected=True, should_stop=stopped) \
            if then_retrain and report.drift_detected else None
    if as_json:
        typer.echo(json.dumps({
            "model_version": report.model_version, "drift_detected": report.drift_detected, "skipped": report.skipped,
            "fresh_labels": len(report.fresh_labels),
            "monitors": [{"monitor": r.monitor, "statistic": r.statistic, "threshold": r.threshold,
                          "drift_detected": r.drift_detected, "details": r.details} for r in report.results],
            "retrain": outcome.__dict__ if outcome else None,
        }, default=str))
    else:
        typer.echo(report.summary())
        if outcome:
            typer.echo(f"retrain: {outcome.decision}: {'; '.join(outcome.reasons)}")
            for warning in outcome.warnings:
                typer.echo(f"warning: {warning}", err=True)
    if outcome is not None and outcome.decision == "stopped":
        _stopped_retrain(signals, outcome)
    if report.drift_detected:
        raise typer.Exit(3)  # scripts can tell "drift" from "ok" (0) and errors (1, 2)


@app.command()
def run(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Skip the cooldown and the wait for labels new to the last "
                                                      "attempt (never the minimum of fresh labels)"),
) -> None:
    """Retrain from the champion on replayed data + fresh labels, evaluate, promote if better. Needs no drift
    (as the cron fallback), but at least FINSENT_RETRAIN_MIN_LABELS fresh labels.

    Exit status: 0 done, 1 failed or busy, 4 promoted but the running workers were not told. SIGTERM or Ctrl-C
    stops it at the next training step or scoring batch, as the scheduler's stop does (the challenger under judging
    is deleted, nothing is promoted): 128 + the signal's number (143, 130)."""
    from retrain.retraining import run_retrain

    settings = settings_of(ctx)
    signals = stop_signals(ctx)
    with _context(settings, signals, "nothing was retrained") as rctx:
        outcome = run_retrain(rctx, trigger="manual" if force else "cron", should_stop=lambda: bool(signals.received))
    typer.echo(f"{outcome.decision}: {'; '.join(outcome.reasons)}")
    for key in ("champion_golden_macro_f1", "challenger_golden_macro_f1", "champion_fresh_macro_f1",
                "challenger_fresh_macro_f1"):
        if key in outcome.figures:
            typer.echo(f"  {key}: {outcome.figures[key]:.4f}")
    if outcome.challenger_version:
        typer.echo(f"  challenger: {outcome.challenger_version} (champion was {outcome.champion_version})")
    for warning in outcome.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if outcome.decision == "stopped":
        _stopped_retrain(signals, outcome)
    if code := run_exit_code(outcome):
        raise typer.Exit(code)


def run_exit_code(outcome) -> int:
    """1: failed or busy; 4: promoted, but the running workers were not told (scripts can tell that
    partial failure, which needs `finsent model promote`, from a failed retrain, which changed nothing)."""
    from model.champion_moves import WORKERS_NOT_TOLD

    if outcome.decision in ("failed", "busy"):
        return 1
    return WORKERS_NOT_TOLD if outcome.workers_notified is False else 0


@app.command()
def scheduler(
    ctx: typer.Context,
    with_indexer: bool = typer.Option(True, "--indexer/--no-indexer", help="Also index the labels topic"),
) -> None:
    """Run the drift-check / retrain schedule until interrupted (jobs persist in SQLite)."""
    from finsent.metrics_server import serve_metrics
    from finsent.settings import without_credentials
    from finsent.stop_signals import StopSignals
    from retrain.label_indexer import indexing_in_background
    from retrain.metrics import RetrainMetrics
    from retrain.scheduler import RetrainScheduler

    settings = settings_of(ctx)
    metrics = RetrainMetrics()
    from retrain.context import Context

    sched = RetrainScheduler(settings, context_factory=lambda s: Context.open(s, metrics=metrics))
    signals = StopSignals()
    start_or_exit(sched.start, signals, f"still connecting to Kafka at {settings.kafka_bootstrap} or Elasticsearch at "
                                        f"{without_credentials(settings.elasticsearch_url)}; no job ran",
                  one_shot=False, failed=lambda exc: fail(f"could not start the scheduler: {exc}"))
    if settings.retrain_metrics_port:
        try:
            serve_metrics(metrics.registry, settings.retrain_metrics_port, settings)
        except OSError as exc:
            sched.shutdown()
            fail(f"cannot serve metrics on {settings.metrics_host}:{settings.retrain_metrics_port}: "
                 f"{exc.strerror or exc} (FINSENT_RETRAIN_METRICS_PORT)")
    with indexing_in_background(settings, with_indexer):
        for job_id, job in sched.jobs().items():
            typer.echo(f"{job_id}: {job['trigger']}, next run {job['next_run_time']}")
        deleted = [f"{what} more than {days:g} days ago" for what, days in (
            ("documents scored", settings.docs_retention_days), ("windows started", settings.aggregates_retention_days))
            if days]
        if deleted:  # it deletes data: say so at every start
            typer.echo(f"index-retention deletes {' and '.join(deleted)} (FINSENT_DOCS_RETENTION_DAYS, "
                       "FINSENT_AGGREGATES_RETENTION_DAYS; 0 keeps everything)")
        try:
            signals.wait()
        finally:
            sched.shutdown()


@app.command()
def golden(ctx: typer.Context) -> None:
    """Build the golden set from the training data if it does not exist yet; print where it is."""
    from model.registry import Registry
    from retrain.golden import ensure_golden, golden_path

    settings = settings_of(ctx)
    path = golden_path(settings)
    existed = path.is_file()
    try:
        rows = ensure_golden(settings, registry=Registry(settings.models_path))  # read only: no mirror
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"{'kept' if existed else 'built'} golden set {path}: {len(rows)} rows")
