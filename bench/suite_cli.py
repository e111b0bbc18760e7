"""``finsent bench pipeline|memory|profile|all|plot`` (registered on ``bench.cli.app``).

``all`` runs the model benchmark (bench/model_bench.py), the pipeline and the memory
benchmarks in one go and judges the targets of issue 9 from that one run's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from finsent.cli_support import fail, settings_of

# Under bench-results/ (git-ignored); BENCHMARKS.md's plot is written with --plot docs/bench-batch-size.png.
DEFAULT_PLOT = Path("bench-results/batch-size.png")


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _finish(results: dict[str, Any], output: Path | None, as_json: bool) -> None:
    from bench import report

    if output:
        report.write_json(results, output)
        _echo(f"results written to {output}")
    if as_json:
        import orjson

        typer.echo(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        report.print_tables(results)


def pipeline(
    ctx: typer.Context,
    backlog: int = typer.Option(3000, min=1, max=10_000, help="Documents in the maximum-rate (drain) measurement"),
    level_seconds: float = typer.Option(20.0, min=0.1, help="Seconds of paced sending per latency level"),
    warmup: int = typer.Option(200, min=1, max=10_000, help="Documents indexed before measuring"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Worker batch size (FINSENT_WORKER_BATCH_SIZE)"),
    batch_within: Optional[float] = typer.Option(None, min=0.001, help="Seconds a batch may wait to fill"),
    model: Optional[str] = typer.Option(None, "--model", help="Version or folder (default: the champion, else a tiny one)"),
    train_steps: int = typer.Option(20, min=1, help="Steps of the tiny model trained when there is no champion"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads of worker and scorer (OMP_NUM_THREADS)"),
    scorer_rounds: int = typer.Option(3, min=1, help="Scorer passes before the worker starts, and as many after "
                                      "the drain; the median of all is the reference"),
    keep: bool = typer.Option(False, "--keep", help="Keep the run's topics, indices and logs"),
    output: Optional[Path] = typer.Option(None, "--output", help="Write the JSON results here"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    """End to end through Kafka, a real worker and Elasticsearch: max docs/s, latency at 25/50/75%."""
    from bench import pipeline_bench, report

    config = pipeline_bench.PipelineConfig(backlog=backlog, level_seconds=level_seconds, warmup=warmup,
                                           batch_size=batch_size, batch_within=batch_within, model=model,
                                           train_steps=train_steps, threads=threads, scorer_rounds=scorer_rounds)
    try:
        result = pipeline_bench.run(settings_of(ctx), config, echo=_echo, keep=keep)
    except Exception as exc:  # noqa: BLE001 - one clear line; the worker log tail is in the message
        fail(f"pipeline benchmark failed: {exc}")
    _finish({"machine": report.machine(), "pipeline": result}, output, as_json)


def memory(
    ctx: typer.Context,
    seconds: float = typer.Option(30.0, min=1, help="Seconds of paced ingest"),
    rate: float = typer.Option(20.0, min=0.1, help="Documents per second through `finsent ingest file`"),
    model: Optional[str] = typer.Option(None, "--model"),
    train_steps: int = typer.Option(20, min=1),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads of the worker (OMP_NUM_THREADS)"),
    keep: bool = typer.Option(False, "--keep"),
    output: Optional[Path] = typer.Option(None, "--output"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Peak RSS of every process (worker, ingest, alerts, scheduler, dashboard) under a paced load."""
    from bench import memory as memory_bench
    from bench import report

    try:
        result = memory_bench.run(settings_of(ctx), seconds=seconds, per_second=rate, model=model,
                                  train_steps=train_steps, keep=keep, threads=threads, echo=_echo)
    except Exception as exc:  # noqa: BLE001
        fail(f"memory benchmark failed: {exc}")
    _finish({"machine": report.machine(), "memory": result}, output, as_json)


def profile(
    ctx: typer.Context,
    seconds: float = typer.Option(20.0, min=1, help="Seconds py-spy samples the worker"),
    backlog: int = typer.Option(4000, min=100, max=10_000, help="Documents drained while sampling"),
    model: Optional[str] = typer.Option(None, "--model"),
    train_steps: int = typer.Option(20, min=1),
    out_dir: Path = typer.Option(Path("bench-results/profile"), "--out", help="Folder for the stacks and summary"),
    top: int = typer.Option(15, min=1, help="Hottest functions to list"),
) -> None:
    """Profile the worker with py-spy while it drains a backlog; where does its time go?"""
    from bench import profiling

    try:
        result = profiling.run(settings_of(ctx), seconds=seconds, backlog=backlog, model=model,
                               train_steps=train_steps, out_dir=out_dir, echo=_echo)
    except Exception as exc:  # noqa: BLE001
        fail(f"profile failed: {exc}")
    profiling.print_summary(result, top=top)


def all_(
    ctx: typer.Context,
    output: Path = typer.Option(Path("bench-results/results.json"), "--output", help="JSON results"),
    plot: Optional[Path] = typer.Option(DEFAULT_PLOT, "--plot", help="PNG of throughput against batch size"),
    backlog: int = typer.Option(3000, min=1, max=10_000),
    level_seconds: float = typer.Option(20.0, min=0.1),
    memory_seconds: float = typer.Option(30.0, min=1),
    baseline_docs: int = typer.Option(200, min=10, help="Messages the one-at-a-time baseline scores"),
    scorer_docs: int = typer.Option(1024, min=16, help="Documents per scorer cell"),
    model: Optional[str] = typer.Option(None, "--model"),
    train_steps: int = typer.Option(20, min=1),
    skip_model: bool = typer.Option(False, "--skip-model", help="Leave out the scorer/baseline grid"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads everywhere (OMP_NUM_THREADS)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Everything, in one run: scorer vs baselines, pipeline, memory, GPU (if any), targets."""
    from bench import suite

    settings = settings_of(ctx)
    try:
        results = suite.run_all(settings, backlog=backlog, level_seconds=level_seconds, memory_seconds=memory_seconds,
                                baseline_docs=baseline_docs, scorer_docs=scorer_docs, model=model,
                                train_steps=train_steps, skip_model=skip_model, threads=threads, echo=_echo)
    except Exception as exc:  # noqa: BLE001
        fail(f"benchmark failed: {exc}")
    if plot and results.get("model"):
        suite.plot(results, plot)
        _echo(f"plot written to {plot}")
    _finish(results, output, as_json)
    if results["passed"] is False:
        raise typer.Exit(1)


def plot_(
    results_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON of `bench all` or `bench model`"),
    output: Path = typer.Option(DEFAULT_PLOT, "--output"),
) -> None:
    """Redraw the throughput-against-batch-size plot from saved results."""
    import orjson

    from bench import suite

    data = orjson.loads(results_file.read_bytes())
    results = data if "model" in data and isinstance(data.get("model"), dict) and "scorer" in data["model"] \
        else {"model": data}
    try:
        suite.plot(results, output)
    except (KeyError, ValueError) as exc:
        fail(f"{results_file} has no scorer grid to plot ({exc})")
    _echo(f"plot written to {output}")


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline)
    app.command("memory")(memory)
    app.command("profile")(profile)
    app.command("all")(all_)
    app.command("plot")(plot_)
