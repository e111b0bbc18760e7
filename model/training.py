"""Fine-tuning a three-class sentiment classifier and registering the result.

``train`` reads labelled files (or rows), splits off a stratified validation set (rows of a source
in ``repeat`` are repeated afterwards, in the training part only), collapses
links (:mod:`model.input_text`, as the scorer does), fine-tunes (the head reads [CLS], or the mean
of the token vectors with ``pooling="mean"``, :mod:`model.pooling`)
with AdamW (weight decay, linear warmup/decay), a class-weighted loss, length-bucketed batches
(less padding on CPU), mixed precision (bf16/fp16 autocast on CUDA, bf16 on a CPU with AMX or AVX512_BF16;
``precision="fp32"`` turns it off), evaluates validation macro-F1 after every epoch (texts read in
chunks of ``eval_max_length`` tokens, as the workers read them; only training rows are cut at
``max_length``), keeps the best epoch's weights, stops early after ``patience`` epochs without improvement, fits a
temperature, and per-label biases where they pay, to the validation split (:mod:`model.calibration`), and
registers the best model with its metrics and data fingerprint.
Seeded: the same data, seed and machine give the same model.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finsent.schemas import LABELS
from model import data as datamod
from model.base_models import DEFAULT_BASE, quiet_transformers, resolve_base
from model.calibration import BIAS_KEY, CONFIG_KEY as CALIBRATION_KEY, bias_of, calibrate
from model.evaluation import evaluate
from model.first_token import first_token_only
from model.input_text import for_model
from model.labels import LabelError, model_label_order, normalise_label
from model.padding import pad_batch
from model.pooling import with_pooling
from model.quantization import native_bf16
from model.registry import CHAMPION, Registry
from model.requirements import check_folder
from model.scorer import Scorer, length_limit, pick_device

log = logging.getLogger(__name__)


class TrainingStopped(Exception):
    """``should_stop`` said so between two steps; nothing was registered."""


@dataclass
class TrainResult:
    version: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Base:
    path: str
    parent_version: str | None


def _resolve(base_model: str | Path, registry: Registry | None) -> _Base:
    """The base to fine-tune; UnscorableModel for a model this code would read wrongly (model.requirements)."""
    text = str(base_model)
    if registry is not None and (text == CHAMPION or registry.exists(text)):
        version = registry.champion() if text == CHAMPION else text
        check_folder(registry.path(text))
        return _Base(str(registry.path(text)), version)
    path = Path(text)
    meta = path / "metadata.json"
    if meta.is_file():  # a registry folder given by path (a retrain's champion)
        import json

        check_folder(path)
        return _Base(resolve_base(path), json.loads(meta.read_text(encoding="utf-8")).get("version"))
    return _Base(resolve_base(text), None)


def _examples(data: Sequence[Any], extra_rows: Sequence[Any] | None, on_bad_rows: str) -> tuple[list[datamod.Example], list[datamod.BadRow]]:
    files = [d for d in data if isinstance(d, (str, Path))]
    rows = [d for d in data if not isinstance(d, (str, Path))]
    report = datamod.load(files, on_bad_rows=on_bad_rows) if files else datamod.LoadReport()
    examples = list(report.examples)
    for source, items in (("rows", rows), ("extra", list(extra_rows or []))):
        for n, item in enumerate(items):
            if isinstance(item, datamod.Example):
                examples.append(item)
                continue
            text, label = (item.text, item.label) if hasattr(item, "text") else (item[0], item[1])
            try:
                examples.append(datamod.Example(text=text, label=normalise_label(label), source=source))
            except LabelError as exc:
                report.bad.append(datamod.BadRow(f"<{source}>", n + 1, str(exc)))
    if report.bad and on_bad_rows == "reject":
        raise datamod.BadDataError(report.bad)
    return examples, report.bad


def _load_model(base: str, seed: int, pooling: str | None = None) -> tuple[Any, Any, list[str]]:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed

    quiet_transformers()
    set_seed(seed)
    config = AutoConfig.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    order: list[str] | None = None
    if has_head:
        try:
            order = model_label_order(config.id2label)
        except LabelError as exc:
            log.warning("base model head does not fit our labels (%s); training a new head", exc)
    if order is None:
        order = list(LABELS)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(LABELS), id2label=dict(enumerate(order)),
            label2id={label: i for i, label in enumerate(order)}, ignore_mismatched_sizes=True,
        )
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base)
    # Save plain label names whatever the base called them ("Positive", "LABEL_2", ...).
    model.config.id2label = dict(enumerate(order))
    model.config.label2id = {label: i for i, label in enumerate(order)}
    # A calibrated base (a retrain starts from the champion) trains and is refitted from T = 1, no bias.
    setattr(model.config, CALIBRATION_KEY, 1.0)
    setattr(model.config, BIAS_KEY, None)
    return first_token_only(with_pooling(model, pooling)), tokenizer, order


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length rows: shuffle, sort within pools of 50 batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _progress(enabled: bool):
    """The bar, on a terminal only: rich draws nothing elsewhere until the end, so output captured in a log
    (``make up > up.log``, a service manager) gets a log line every twentieth of the run instead
    (``Progress.disable``)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not (enabled and console.is_terminal),
    )


def train(
    data: Sequence[Path | str] | Sequence[tuple[str, str]],
    *,
    base_model: str | Path = DEFAULT_BASE,
    registry: Registry,
    epochs: int = 4,
    max_steps: int | None = None,
    seed: int = datamod.SPLIT_SEED,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_length: int = 96,
    eval_max_length: int = 128,
    pooling: str | None = None,
    patience: int = 2,
    parent_version: str | None = None,
    val_fraction: float = datamod.SPLIT_FRACTION,
    progress: bool = True,
    extra_rows: Sequence[Any] | None = None,
    repeat: Mapping[str, int] | None = None,
    on_bad_rows: str = "skip",
    device: str = "auto",
    threads: int | None = None,
    precision: str = "auto",
    notes: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` on ``data`` and register the best epoch. ``should_stop`` is asked
    before each step (a scheduler that is stopping): when it says yes, :class:`TrainingStopped`.
    ``max_length`` cuts the training rows (speed); validation, calibration and the recorded figures read texts as
    the workers do, in chunks of ``eval_max_length`` (FINSENT_MAX_LENGTH) tokens."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    if precision not in ("auto", "fp32"):
        raise ValueError(f"training precision must be auto or fp32, not {precision!r}")
    if threads:
        torch.set_num_threads(threads)
    base = _resolve(base_model, registry)
    examples, bad = _examples(data, extra_rows, on_bad_rows)
    for row in bad:  # each, as eval and calibrate name them: a skipped file's rows are not all alike
        log.warning("skipped %s", row)
    if bad:
        log.warning("skipped %d bad row(s) in all", len(bad))
    if len(examples) < 2:
        raise ValueError(f"need at least 2 labelled rows to train, got {len(examples)}")
    train_set, val_set = datamod.split_and_repeat(examples, val_fraction, seed, repeat)
    dev = pick_device(device)
    model, tokenizer, order = _load_model(base.path, seed, pooling)
    model.to(dev)
    limit = length_limit(model.config, tokenizer.model_max_length)
    if limit is not None and max_length > limit:  # longer sequences fail in the position embeddings
        log.warning("max_length %d is more than %s reads; training with %d", max_length, base.path, limit)
        max_length = limit

    encoded = tokenizer([for_model(e.text) for e in train_set], truncation=True, max_length=max_length)["input_ids"]
    targets = [order.index(e.label) for e in train_set]
    weights = datamod.class_weights([e.label for e in train_set])
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor([weights[LABELS.index(label)] for label in order], dtype=torch.float, device=dev)
    )
    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate)
    steps_per_epoch = max(1, -(-len(train_set) // batch_size))
    total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    if max_steps is not None and max_steps > epochs * steps_per_epoch:
        total_steps = max_steps
        epochs = -(-max_steps // steps_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    if precision == "fp32":
        amp_dtype = None
    elif dev == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:  # bf16 hardware (AMX, AVX512_BF16): a step 1.3-1.5x as fast (README); emulated elsewhere, and slower
        amp_dtype = torch.bfloat16 if native_bf16() else None
    grad_scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    rng = random.Random(seed)
    precision_used = str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32"
    # Once the model and rows are loaded (seconds; more on a busy machine): a stop from this line on ends at a step
    # ("training stopped at step ..."), which tests/reliability waits for.
    log.info("training on %s (%s): %d rows, %d for validation, %d steps (batches of %d) in %d epoch(s)", dev,
             precision_used, len(train_set), len(val_set), total_steps, batch_size, epochs)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"macro_f1": -1.0, "epoch": 0, "state": None}
    step, stale = 0, 0
    started = time.monotonic()
    with _progress(progress) as bar:
        task = bar.add_task("training", total=total_steps, status="")
        for epoch in range(1, epochs + 1):
            model.train()
            running, seen = 0.0, 0
            for batch in _batches([len(x) for x in encoded], batch_size, rng):
                if step >= total_steps:
                    break
                if should_stop is not None and should_stop():
                    raise TrainingStopped(f"training stopped at step {step} of {total_steps}")
                padded = pad_batch([encoded[i] for i in batch], tokenizer)
                inputs = {k: v.to(dev) for k, v in padded.items()}
                labels = torch.tensor([targets[i] for i in batch], device=dev)
                with torch.autocast(device_type=dev, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = loss_fn(model(**inputs).logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                grad_scaler.scale(loss).backward()
                grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                grad_scaler.step(optimizer)
                grad_scaler.update()
                scheduler.step()
                step += 1
                running, seen = running + loss.item() * len(batch), seen + len(batch)
                bar.update(task, advance=1, status=f"epoch {epoch}/{epochs} loss {running / seen:.4f}")
                if bar.disable and step % max(1, total_steps // 20) == 0:
                    rate = step / (time.monotonic() - started)
                    log.info("step %d/%d epoch %d loss %.4f, %.2f steps/s, ETA %.0f s", step, total_steps,
                             epoch, running / seen, rate, (total_steps - step) / rate)
            record: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": running / max(seen, 1),
                                      "elapsed_s": round(time.monotonic() - started, 1)}
            if val_set:
                model.eval()
                scorer = Scorer(model, tokenizer, version="training", device=dev, max_length=eval_max_length,
                                batch_size=128, label_order=order)
                val = evaluate(scorer, [e.text for e in val_set], [e.label for e in val_set])
                record |= {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]}
                improved = val["macro_f1"] > best["macro_f1"]
            else:
                improved = True
            history.append(record)
            scores = f", validation accuracy {val['accuracy']:.3f}, macro-F1 {val['macro_f1']:.3f}" if val_set else ""
            log.info("epoch %d/%d done after %.0f s: loss %.4f%s", epoch, epochs, record["elapsed_s"],
                     record["train_loss"], scores)
            if on_epoch:
                on_epoch(record)
            if improved:
                best = {"macro_f1": record.get("val_macro_f1", 0.0), "epoch": epoch,
                        "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
                stale = 0
            else:
                stale += 1
            if step >= total_steps or stale >= patience:
                break

    model.load_state_dict(best["state"])
    model.to("cpu").eval()
    scorer = Scorer(model, tokenizer, version="training", device="cpu", max_length=eval_max_length,
                    batch_size=128, label_order=order)
    validation: dict[str, Any] = {}
    calibration: dict[str, Any] = {"temperature": 1.0, "data": "none (no validation split)"}
    if val_set:
        texts, labels = [e.text for e in val_set], [e.label for e in val_set]
        calibration = calibrate(scorer.predict_proba(texts), labels) | {"data": "validation split"}
        setattr(model.config, CALIBRATION_KEY, calibration["temperature"])  # saved with the model
        if calibration["bias"]:
            setattr(model.config, BIAS_KEY, calibration["bias"])
        scorer.temperature, scorer.bias = calibration["temperature"], bias_of(model.config)
        # Scored again as the saved model scores (calibrated; with several sources, each one's figures too).
        # The same rows fitted T, so the ECE here is a little optimistic (README: cross-fitted figures).
        validation = evaluate(scorer, texts, labels, [e.source for e in val_set])
    metadata = {
        "base_model": str(base_model),
        "parent_version": parent_version or base.parent_version,
        "labels": list(LABELS),
        "data_fingerprint": datamod.fingerprint(examples),
        "metrics": {"validation": validation},
        "calibration": calibration,
        "training": {
            "train_size": len(train_set), "val_size": len(val_set), "bad_rows": len(bad), "repeat": dict(repeat or {}),
            "sources": sorted({e.source for e in examples}), "seed": seed, "epochs": epochs,
            "max_steps": max_steps, "steps": step, "best_epoch": best["epoch"], "batch_size": batch_size,
            "learning_rate": learning_rate, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio,
            "max_length": max_length, "eval_max_length": eval_max_length, "pooling": model.config.finsent_pooling,
            "patience": patience, "device": dev,
            "precision": precision_used, "history": history,
            "class_weights": dict(zip(LABELS, weights)), "duration_s": round(time.monotonic() - started, 1),
        } | (notes or {}),
    }
    with tempfile.TemporaryDirectory(prefix="finsent-train-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Which rows it never trained on, exactly, whatever --seed or --val-fraction split them (retrain.golden).
        metadata["training"]["held_out_texts"] = datamod.write_held_out(Path(tmp), train_set, val_set)
        version = registry.register(tmp, metadata)
    return TrainResult(version=version, metrics=validation, history=history)
