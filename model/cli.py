"""``finsent model …``: train, eval, calibrate, predict, list, promote, rollback, prune, quantization.

The registry is ``settings.models_path`` (``FINSENT_MODEL_DIR``). When Elasticsearch answers,
model metadata is mirrored to the ``finsent-models`` index; when it does not, a warning says so
and the command still works on the files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import typer

from finsent.cli_support import fail, settings_of, stop_signals, stopped_before_the_end
from finsent.settings import Settings
from model import champion_moves as moves
from model.data import SPLIT_FRACTION, SPLIT_SEED


app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
log = logging.getLogger(__name__)

PREDICT_CHUNK = 512


def _registry(settings: Settings, *, mirror: bool = True):
    from model.registry import open_registry

    return open_registry(settings, mirror=mirror)


def _offline() -> None:
    # Never reach for a hub at run time; local folders and the packaged MiniLM need none.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _load_scorer(settings: Settings, ref: str, registry: Any, *, batch_size: int, threads: int | None, quantize: str | None):
    from model.registry import RegistryError
    from model.scorer import Scorer

    _offline()
    try:
        return Scorer.load(ref, registry=registry, device=settings.device, max_length=settings.max_length,
                           batch_size=batch_size or settings.model_batch_size, quantize=quantize,
                           threads=threads or settings.model_threads)
    except (RegistryError, FileNotFoundError, OSError, ValueError) as exc:
        fail(f"cannot load model {ref!r}: {exc}")


def _quantize_option(settings: Settings, value: str | None) -> str | None:
    from model.quantization import resolve_quantize

    try:
        return resolve_quantize(value or settings.model_quantize)
    except ValueError as exc:
        fail(str(exc))


@app.command()
def train(
    ctx: typer.Context,
    data: list[Path] = typer.Option(..., "--data", help="CSV or JSONL with text,label (repeatable)"),
    epochs: int = typer.Option(4, min=1),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after this many optimiser steps"),
    base_model: Optional[str] = typer.Option(None, help="Packaged MiniLM (default), HF folder or id, version or 'champion'"),
    batch_size: int = typer.Option(32, min=1),
    learning_rate: float = typer.Option(1e-4, "--lr", min=0.0),
    max_length: int = typer.Option(96, min=8, help="Tokens per training example"),
    pooling: Optional[str] = typer.Option(
        None, help="Head input: cls, or mean (of the token vectors). Default: what the base was trained with, else cls"),
    val_fraction: float = typer.Option(SPLIT_FRACTION, min=0.0, max=0.9),
    patience: int = typer.Option(2, min=1, help="Epochs without a better validation macro-F1 before stopping"),
    seed: int = SPLIT_SEED,
    on_bad_rows: str = typer.Option("skip", help="skip (and count) or reject bad rows"),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for torch"),
    precision: str = typer.Option("auto", help="auto (bf16/fp16 autocast on a GPU, bf16 on a CPU with AMX or "
                                               "AVX512_BF16, else fp32) or fp32"),
    promote: bool = typer.Option(False, help="Make the new version the champion and tell running workers"),
    notify: bool = typer.Option(True, help="With --promote: send a control message so running workers swap models"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object: version and validation metrics"),
    progress: bool = typer.Option(True, help="Progress bar with ETA on stderr"),
) -> None:
    """Fine-tune a classifier and register it; the last line of output is the version (with --json, its object).

    With --promote, the new version becomes champion as `finsent model promote` makes it: exit status 4 when it did
    but the running workers were not told (Kafka away), 1 or 128 + the signal's number when it stays registered only
    (its ONNX export failed; SIGTERM or Ctrl-C before the move). The output comes first in each case."""
    from model.data import BadDataError
    from model.pooling import POOLINGS
    from model.training import train as run_training

    settings = settings_of(ctx)
    if on_bad_rows not in {"skip", "reject"}:
        fail(f"--on-bad-rows must be skip or reject, not {on_bad_rows!r}")
    if pooling not in (None, *POOLINGS):
        fail(f"--pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    for path in data:
        if not path.is_file():
            fail(f"no data file {path}")
    _offline()
    registry = _registry(settings)
    try:
        result = run_training(
            data, base_model=base_model or settings.base_model, registry=registry, epochs=epochs,
            max_steps=max_steps, seed=seed, batch_size=batch_size, learning_rate=learning_rate,
            max_length=max_length, eval_max_length=settings.max_length, pooling=pooling, val_fraction=val_fraction,
            patience=patience, progress=progress,
            on_bad_rows=on_bad_rows, device=settings.device, threads=threads, precision=precision,
        )
    except BadDataError as exc:
        fail(f"rejected the training data: {exc}")
    except (FileNotFoundError, OSError, ValueError) as exc:
        fail(str(exc))
    if not promote:
        _print_trained(result, promoted=False, as_json=as_json)
        return
    signals = stop_signals(ctx)  # from here: a stop says whether the new version became champion, and what to run
    previous = moves.champion_of(registry)
    try:
        moved = moves.promote_registered(settings, registry, result.version, signals, previous)
    except typer.Exit:
        _print_trained(result, promoted=False, as_json=as_json)  # registered all the same: its version goes last
        raise
    _print_trained(result, promoted=True, as_json=as_json)  # before the workers are told, which a stop cuts short
    if notify:
        moves.exit_if_untold(moves.announce(settings, "promote", moved, registry.path(result.version), previous,
                                            signals))


def _print_trained(result: Any, *, promoted: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"version": result.version, "promoted": promoted, "validation": result.metrics}))
        return
    if result.metrics:
        from model.evaluation import summary_lines

        for line in summary_lines(result.metrics):
            typer.echo(line)
    if promoted:
        typer.echo(f"promoted {result.version} to champion")
    typer.echo(result.version)


@app.command("eval")
def eval_(
    ctx: typer.Context,
    model: str = typer.Option("champion", "--model", help="Version, folder or 'champion'"),
    data: list[Path] = typer.Option(..., "--data", help="CSV or JSONL with text,label"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Default: FINSENT_MODEL_BATCH_SIZE"),
    threads: Optional[int] = typer.Option(None, min=1, help="Default: FINSENT_MODEL_THREADS"),
    quantize: str = typer.Option("none", help="none, int8, onnx-int8, bf16 or auto (the measured default); fp32 unless asked"),
    on_bad_rows: str = typer.Option("skip"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix, ECE, n (stored in the model's metadata)."""
    from model.evaluation import evaluate

    settings = settings_of(ctx)
    report = _labelled(data, on_bad_rows, "evaluate")
    registry = _registry(settings)
    scorer = _load_scorer(settings, model, registry, batch_size=batch_size, threads=threads,
                          quantize=_quantize_option(settings, quantize))
    result = evaluate(scorer, [e.text for e in report.examples], [e.label for e in report.examples],
                      [e.source for e in report.examples])
    result |= {"model_version": scorer.version, "data": [str(p) for p in data], "bad_rows": len(report.bad),
               "quantized": scorer.quantized, "precision": scorer.precision}
    if registry.exists(scorer.version):
        meta = registry.get(scorer.version)
        evals = dict(meta.get("metrics", {}).get("eval", {}))
        evals[",".join(str(Path(p).resolve()) for p in data)] = result
        registry.update_metadata(scorer.version, metrics=meta.get("metrics", {}) | {"eval": evals})
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print_metrics(result)


def _labelled(data: list[Path], on_bad_rows: str, purpose: str) -> Any:
    """The labelled rows of ``data``; bad rows skipped with a warning each, or rejected."""
    from model import data as datamod

    if on_bad_rows not in {"skip", "reject"}:
        fail(f"--on-bad-rows must be skip or reject, not {on_bad_rows!r}")
    try:
        report = datamod.load(data, on_bad_rows=on_bad_rows)
    except (datamod.BadDataError, FileNotFoundError) as exc:
        fail(str(exc))
    for bad in report.bad:
        typer.echo(f"warning: skipped {bad}", err=True)
    if not report.examples:
        fail(f"no usable rows to {purpose}")
    return report


@app.command()
def calibrate(
    ctx: typer.Context,
    model: str = typer.Option("champion", "--model", help="Version, folder or 'champion'"),
    data: list[Path] = typer.Option(..., "--data", help="CSV or JSONL with text,label the model was not trained on"),
    bias: str = typer.Option("auto", "--bias", help="Per-label biases: auto (kept if they pay on held-out halves), "
                             "on or off"),
    promote: bool = typer.Option(False, "--promote", help="Make the calibrated version the champion and tell workers"),
    on_bad_rows: str = typer.Option("skip"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit MODEL's temperature (and per-label biases) to labelled rows and register the same weights
    with them as a new version.

    Training already calibrates on its validation split; this is for a model trained before that, or for
    rows closer to what it will score. The temperature changes no label; biases do (model/calibration.py).
    The figures after, and the new version's validation figures, are measured on the fitting rows. With --promote,
    exit status 4 when the new version became champion but the running workers were not told (Kafka away)."""
    from model.calibrated import register_calibrated

    if bias not in ("auto", "on", "off"):
        fail(f"--bias must be auto, on or off, not {bias!r}", code=2)
    settings = settings_of(ctx)
    report = _labelled(data, on_bad_rows, "calibrate on")
    registry = _registry(settings)
    scorer = _load_scorer(settings, model, registry, batch_size=None, threads=None, quantize=None)
    had_bias = any(scorer.bias)
    version, calibration = register_calibrated(registry, scorer, registry.path(model), report.examples,
                                               [str(p) for p in data], bias=bias)
    told = True
    if promote:
        signals = stop_signals(ctx)  # from here: a stop while the workers are told says the champion moved
        previous = moves.champion_of(registry)
        moved = registry.promote(version)
        told = moves.announce(settings, "promote", moved, registry.path(version), previous, signals)
    if as_json:
        typer.echo(json.dumps({"version": version, "promoted": promote, "calibration": calibration}))
    else:
        _print_calibrated(version, calibration, had_bias=had_bias, promoted=promote)
    moves.exit_if_untold(told)  # after the output: the new version is registered, and champion


def _print_calibrated(version: str, calibration: dict[str, Any], *, had_bias: bool, promoted: bool) -> None:
    check = calibration["bias_check"]
    if calibration["bias"]:
        biases = ", ".join(f"{label} {value:+.2f}" for label, value in calibration["bias"].items() if value)
        said = f"biases {biases}; accuracy {calibration['accuracy_before']:.4f} -> {calibration['accuracy_after']:.4f}"
    else:
        won = f" (it won {check['splits_won']} of {check['splits']} held-out halves)" if "splits" in check else ""
        said = f"no bias{won}; " + ("the model's biases are dropped, so labels change" if had_bias
                                     else "labels unchanged")
    typer.echo(f"temperature {calibration['temperature']:.3f} on {calibration['n']} rows: ECE "
               f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}; {said}")
    if promoted:
        typer.echo(f"promoted {version} to champion")
    typer.echo(version)


def _print_metrics(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    low, high = result["accuracy_ci95"]
    console.print(f"model {result['model_version']}: n={result['n']} accuracy={result['accuracy']:.4f} "
                  f"(95% interval {low:.4f}–{high:.4f}) macro_f1={result['macro_f1']:.4f} ece={result['ece']:.4f}")
    if held := result.get("macro_f1_labels"):
        console.print(f"  macro_f1 over {', '.join(held)}: the labels the data holds")
    for source, row in result.get("by_source", {}).items():
        low, high = row["accuracy_ci95"]
        console.print(f"  {source}: n={row['n']} accuracy={row['accuracy']:.4f} ({low:.4f}–{high:.4f}) "
                      f"macro_f1={row['macro_f1']:.4f}")
    table = Table("label", "precision", "recall", "f1", "support")
    for label, row in result["per_class"].items():
        table.add_row(label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    console.print(table)
    matrix = Table("true \\ predicted", *result["confusion_matrix"]["labels"])
    for label, row in zip(result["confusion_matrix"]["labels"], result["confusion_matrix"]["rows_true_cols_pred"]):
        matrix.add_row(label, *map(str, row))
    console.print(matrix)


@app.command()
def predict(
    ctx: typer.Context,
    model: str = typer.Option("champion", "--model", help="Version, folder or 'champion'"),
    input: Path = typer.Option(..., "--input", help="JSONL with a text field, or CSV with a text column"),
    output: Path = typer.Option(..., "--output", help="JSONL, one line per input row ('-' for stdout)"),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Default: FINSENT_MODEL_BATCH_SIZE"),
    threads: Optional[int] = typer.Option(None, min=1, help="Default: FINSENT_MODEL_THREADS"),
    quantize: Optional[str] = typer.Option(None, help="none, int8, onnx-int8, bf16 or auto; default FINSENT_MODEL_QUANTIZE"),
) -> None:
    """Score a file; a bad row gets an ``error`` line in its place, so lines stay aligned."""
    from model.data import missing_columns
    from model.predict import output_problem, predict_file

    settings = settings_of(ctx)
    if not input.is_file():
        fail(f"no input file {input}")
    if problem := missing_columns(input, ("text",)):
        fail(f"{input}: {problem}")
    to_stdout = str(output) == "-"
    if not to_stdout and (problem := output_problem(input, output)):
        fail(problem)
    registry = _registry(settings, mirror=False)
    scorer = _load_scorer(settings, model, registry, batch_size=batch_size, threads=threads,
                          quantize=_quantize_option(settings, quantize))
    try:
        out = sys.stdout if to_stdout else output.open("w", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    try:
        counts = predict_file(scorer, input, out, chunk=PREDICT_CHUNK)
    finally:
        if out is not sys.stdout:
            out.close()
    typer.echo(f"scored {counts['scored']} row(s), {counts['errors']} error line(s) with model {scorer.version}",
               err=True)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every registered version, oldest first; the champion is marked, and a version this release cannot score
    (it requires a feature this release does not know) is warned of."""
    from model import requirements

    registry = _registry(settings_of(ctx), mirror=False)
    versions, problems = registry.scan()
    for problem in problems:
        typer.echo(f"warning: left out {problem}", err=True)
    for meta in versions:  # listed, but a worker of this release would refuse it (model.requirements)
        try:
            requirements.check(meta)
        except requirements.UnscorableModel as exc:
            typer.echo(f"warning: {exc}", err=True)
    if as_json:
        typer.echo(json.dumps(versions))
        return
    from finsent.cli_tables import Column, print_table, terminal_width

    # The version is what promote and rollback take, so it is never cut; below 120 columns the
    # temperature, parent and base model go (the status column says which version is the champion).
    wide_from = 120
    columns = [Column("version"), Column("status"), Column("acc", justify="right"),
               Column("macro-F1", justify="right"), Column("T", from_width=wide_from, justify="right"),
               Column("created (UTC)"), Column("parent", whole=False, from_width=wide_from),
               Column("base model", whole=False, from_width=wide_from)]
    rows = []
    for meta in versions:
        val = meta.get("metrics", {}).get("validation", {})
        temperature = meta.get("calibration", {}).get("temperature")
        rows.append([meta["version"], str(meta.get("status", "")),
                     f"{val['accuracy']:.3f}" if "accuracy" in val else "",
                     f"{val['macro_f1']:.3f}" if "macro_f1" in val else "",
                     f"{temperature:.2f}" if temperature is not None else "", _minute(meta.get("created_at")),
                     str(meta.get("parent_version") or ""), str(meta.get("base_model"))])
    print_table(columns, rows, caption="acc, macro-F1: validation split"
                + ("; T: calibration temperature" if terminal_width() >= wide_from else "; more with --json"))
    if not versions:
        typer.echo(f"no models in {registry.root}", err=True)


def _minute(iso: str | None) -> str:
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M")


@app.command()
def promote(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="Version to make champion"),
    notify: bool = typer.Option(True, help="Send a control message so running workers swap models"),
) -> None:
    """Make VERSION the champion (atomically) and tell running workers (for the champion itself: tell them again).

    Exit status: 0 done (with --no-notify: moved, no one told), 1 not moved, 4 moved but the workers were not told
    (Kafka away; the warning names the command that tells them). SIGTERM or Ctrl-C before the move changes nothing;
    after it, while the earlier champion's ONNX export is built (onnx-int8; it is normally there still) or the
    workers are being told, it ends the command with a line that says the champion moved and how to tell them. Either
    exits 128 + the signal's number (143, 130)."""
    from model.onnx_runtime import ExportStopped
    from model.registry import RegistryError

    settings = settings_of(ctx)
    signals = stop_signals(ctx)
    registry = moves.open_registry_or_exit(settings, signals)
    previous = moves.champion_of(registry)
    if registry.exists(version):
        try:
            moves.ensure_export(settings, registry.path(version), signals)
        except ExportStopped:
            moves.unchanged(signals, f"{version} not promoted: stopped while its ONNX export was built", previous)
        except Exception as exc:  # the workers could not load it either
            fail(f"{version} not promoted: its ONNX export failed ({exc})")
    if signals.received:
        moves.unchanged(signals, f"{version} not promoted", previous)
    try:
        moved = registry.promote(version)
    except RegistryError as exc:
        fail(str(exc))
    typer.echo(f"champion is now {version}")
    if notify:
        moves.exit_if_untold(moves.announce(settings, "promote", moved, registry.path(version), previous, signals))


@app.command()
def rollback(
    ctx: typer.Context,
    notify: bool = typer.Option(True, help="Send a control message so running workers swap models"),
) -> None:
    """Make the previous champion the champion again.

    Exit status: 0 done (with --no-notify: moved, no one told), 1 not moved, 4 moved but the workers were not told
    (Kafka away; the warning names the command that tells them). SIGTERM or Ctrl-C before the move changes nothing;
    after it, while the earlier champion's ONNX export is built (onnx-int8; it is normally there still) or the
    workers are being told, it ends the command with a line that says the champion moved and how to tell them. Either
    exits 128 + the signal's number (143, 130)."""
    from model.onnx_runtime import ExportStopped
    from model.registry import RegistryError

    settings = settings_of(ctx)
    signals = stop_signals(ctx)
    registry = moves.open_registry_or_exit(settings, signals)
    previous = moves.champion_of(registry)
    if signals.received:
        moves.unchanged(signals, "not rolled back", previous)
    try:
        moved = registry.rollback()
    except RegistryError as exc:
        fail(str(exc))
    version = moved.champion
    typer.echo(f"champion is now {version}")
    try:  # the earlier champion was served before, so its export is normally there still
        moves.ensure_export(settings, registry.path(version), signals)
    except ExportStopped:  # after the move: the target is known only once it is made
        told = ("running workers were not told: `finsent model promote {v}` builds it and tells them" if notify
                else "each worker builds it as it loads the model").format(v=version)
        stopped_before_the_end(signals, f"the champion is now {version} (was {previous or 'none'}), but its ONNX "
                                        f"export was stopped before it was built; {told}")
    except Exception as exc:
        typer.echo(f"warning: the ONNX export of {version} failed ({exc}); each worker tries again", err=True)
    if notify:
        moves.exit_if_untold(moves.announce(settings, "rollback", moved, registry.path(version), previous, signals))


@app.command()
def prune(
    ctx: typer.Context,
    keep: Optional[int] = typer.Option(
        None, min=1, help="Newest versions and rollback targets to keep (default: FINSENT_MODEL_KEEP_VERSIONS)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of the versions"),
) -> None:
    """Delete old versions: the champion, its nearest rollback targets and the newest ones stay."""
    settings = settings_of(ctx)
    keep = keep or settings.model_keep_versions
    if not keep:
        fail("FINSENT_MODEL_KEEP_VERSIONS is 0 (keep every version): give --keep N")
    registry = _registry(settings, mirror=not dry_run)
    versions = registry.prune(keep, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(versions))
        return
    for version in versions:
        typer.echo(version)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {len(versions)} version(s) from {registry.root}, keeping {keep} newest and {keep} rollback "
               "target(s) besides the champion", err=True)


@app.command("quantization")
def quantization_(
    ctx: typer.Context,
    model: str = typer.Option("champion", "--model", help="Version, folder or 'champion'"),
    data: list[Path] = typer.Option(..., "--data", help="Labelled CSV/JSONL files"),
    validation_split: bool = typer.Option(
        True, help="Use only the validation rows the trainer split off (same --seed and --val-fraction)"),
    val_fraction: float = typer.Option(SPLIT_FRACTION, min=0.01, max=0.9),
    seed: int = SPLIT_SEED,
    batch_size: int = typer.Option(64, min=1),
    threads: Optional[int] = typer.Option(None, min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure bf16 autocast, int8 (torch) and int8 ONNX Runtime against fp32 on CPU: docs/s and accuracy of each,
    and the variant it recommends."""
    from model import data as datamod
    from model.quantization import MAX_ACCURACY_LOSS, VARIANTS, batching_caveat, compare

    settings = settings_of(ctx)
    _offline()
    if threads:
        import torch

        torch.set_num_threads(threads)
    examples = _labelled(data, "skip", "measure on").examples  # each bad row named, as eval names them
    if validation_split:
        examples = datamod.stratified_split(examples, val_fraction, seed)[1]
    if not examples:
        fail("no rows to measure on")
    registry = _registry(settings, mirror=False)
    result = compare(model, [e.text for e in examples], [e.label for e in examples],
                     sources=[e.source for e in examples], registry=registry,
                     batch_size=batch_size, max_length=settings.max_length, threads=threads)
    result["threads"] = threads
    if as_json:
        typer.echo(json.dumps(result))
        return
    for name, _ in VARIANTS:
        r = result[name]
        per_source = " ".join(f"{k}={v:.4f}" for k, v in r.get("by_source", {}).items())
        typer.echo(f"{name}: {r['docs_per_s']:.1f} docs/s accuracy={r['accuracy']:.4f} macro_f1={r['macro_f1']:.4f}"
                   + (f" ({per_source})" if per_source else "")
                   + (f" same label as fp32: {r['agreement_with_fp32']:.4f}" if name != "fp32" else "")
                   + f" changed by batching: {r['changed_by_batching']:.4f}")
    typer.echo(f"recommended: {result['recommended']} (rule: faster than fp32 and at most "
               f"{MAX_ACCURACY_LOSS * 100:.1f} accuracy points lost, overall and per source), n={result['n']}")
    if caveat := batching_caveat(result):
        typer.echo(f"but: {caveat}")
