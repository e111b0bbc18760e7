"""``finsent bench …``: benchmarks. Speed is measured here, never asserted in tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from finsent.cli_support import fail, settings_of

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


@app.command()
def model(
    ctx: typer.Context,
    model_ref: str = typer.Option("champion", "--model", help="Version, folder or 'champion' (untrained MiniLM if none)"),
    data: list[Path] = typer.Option([], "--data", help="CSV files to sample realistic texts from (default: ../shared/data if present)"),
    baseline_docs: int = typer.Option(100, min=10),
    scorer_docs: int = typer.Option(256, min=16),
    repeats: int = typer.Option(3, min=1, help="Rounds of baseline and scorer, alternated; the median round is reported"),
    batch_size: list[int] = typer.Option([], "--batch-size", help="Batch sizes to measure (repeatable)"),
    length: list[int] = typer.Option([], "--length", help="Text lengths in tokens to measure (repeatable)"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's choice)"),
    quantize: str = typer.Option("auto", help="The main scorer's precision: auto (FINSENT_MODEL_QUANTIZE's default), "
                                              "none (fp32), int8, onnx-int8 or bf16"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the JSON report here"),
) -> None:
    """docs/s of the batched Scorer against batch size and text length, and of a HF pipeline baseline."""
    from bench import model_bench
    from model.quantization import resolve_quantize
    from model.registry import Registry, RegistryError

    settings = settings_of(ctx)
    try:
        precision = resolve_quantize(quantize)
    except ValueError as exc:
        fail(f"--quantize: {exc}")
    try:
        folder = Registry(settings.models_path).path(model_ref)
    except RegistryError:
        if model_ref != "champion":
            fail(f"no model {model_ref!r} in {settings.models_path}")
        folder = None
    if not data:
        shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        data = sorted(shared.glob("*/train.csv"))
    echo = (lambda m: typer.echo(m, err=True))
    report = model_bench.run(
        model_folder=folder, data_files=data, baseline_docs=baseline_docs, scorer_docs=scorer_docs,
        threads=threads, device=settings.device, quantize=precision,
        repeats=repeats, echo=echo,
        **({"batch_sizes": tuple(batch_size)} if batch_size else {}),
        **({"lengths": tuple(length)} if length else {}),
    )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report))
    else:
        model_bench.render(report)


# pipeline, memory, profile, all and plot (issue 9) live in bench/suite_cli.py.
from bench.suite_cli import register as _register_suite  # noqa: E402

_register_suite(app)
