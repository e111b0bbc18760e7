"""ONNX Runtime on CPU: the classifier exported once per model version, graph-optimised and
quantised to int8, behind the call the :class:`~model.scorer.Scorer` makes of a torch model.
The exported model is the scorer's: for [CLS] pooling, its last block runs for the first token
only (:mod:`model.first_token`).

The export (TorchScript-based ``torch.onnx.export``), ONNX Runtime's transformer optimiser
(fused LayerNorm and GELU) and dynamic int8 quantisation with per-channel weights run on first
use and are cached in the model folder as ``onnx/`` :data:`INT8_FILE` (written to a temporary
file and renamed, so two workers loading the same version never see half a file).
:func:`export_apart` runs the export in a process of its own that a stop or a time limit kills: in
process, ``torch.onnx.export`` cannot be interrupted (6-10 s for MiniLM on two shared cores, a spawned
process 15 s; a larger model takes longer). Its temporary files stay in the model's cache, so a kill removes them,
and it ends with a parent that dies (SIGKILL) rather than run on as an orphan. It ignores SIGINT and SIGTERM, which
a terminal or ``finsent down`` sends the whole family: the parent decides, so a stop reads as a stop, never as an
export that failed.

Mixed precision: the feed-forward layers of the first :data:`FP32_FFN_BLOCKS` encoder blocks stay
fp32. Quantised one at a time on unlabelled training texts, they were the only layers that
changed labels; BERT's feed-forward activations carry a few outlier dimensions that one int8
scale per tensor flattens (Bondarenko et al., "Understanding and Overcoming the Challenges of
Efficient Transformer Quantization", 2021). Figures in :mod:`model.quantization`.

Why int8 and not fp32: ONNX Runtime in fp32 scored no faster than torch here; its int8 path is
the fast one (figures in :mod:`model.quantization`).
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import multiprocessing.util
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

CACHE_DIR = "onnx"
# Named after the recipe (mixed precision; last block cut to the first token, model.first_token):
# a cache of an older recipe is never reused.
INT8_FILE = "model-int8-mixed-first-token.onnx"
FP32_FILE = "model-fp32-first-token.onnx"
FP32_FFN_BLOCKS = 2
# The feed-forward MatMuls of a BERT-family graph exported by torch.onnx, and their block number.
_FFN_MATMUL = re.compile(r"layer\.(\d+)/(?:intermediate|output)/dense/MatMul$")


def fp32_nodes(node_names: list[str], blocks: int = FP32_FFN_BLOCKS) -> list[str]:
    """The MatMul nodes left in fp32: the feed-forward layers of the first ``blocks`` blocks."""
    return [name for name in node_names if (m := _FFN_MATMUL.search(name)) and int(m.group(1)) < blocks]


def stale_cache_files(folder: Path | str) -> list[Path]:
    """Exports of an earlier recipe in a model folder's cache: nothing loads them any more."""
    cache = Path(folder) / CACHE_DIR
    if not cache.is_dir():
        return []
    return sorted(p for p in cache.glob("*.onnx") if p.name not in (INT8_FILE, FP32_FILE))


def cache_file(folder: Path | str, *, quantize: bool = True) -> Path:
    """Where a model folder's ONNX export is cached (it may not exist yet)."""
    return Path(folder) / CACHE_DIR / (INT8_FILE if quantize else FP32_FILE)


def _partial_prefix(pid: int) -> str:
    return f".export-{pid}-"


def remove_partial_export(folder: Path | str, pid: int) -> None:
    """Delete what an export by process ``pid``, killed before it finished, left in the model's cache
    (up to a few hundred MB); another process's export under way is left alone."""
    for partial in (Path(folder) / CACHE_DIR).glob(_partial_prefix(pid) + "*"):
        shutil.rmtree(partial, ignore_errors=True)


def export_missing(quantize_setting: str | None, folder: Path | str) -> bool:
    """Whether workers that score with this ``FINSENT_MODEL_QUANTIZE`` need an ONNX export of the
    folder that is not built yet: whoever promotes the model builds it first (retrain, CLI), and the
    scorer process builds one still missing apart from the model that scores."""
    return quantize_setting == "onnx-int8" and not cache_file(folder).is_file()


def onnx_file(folder: Path | str, *, quantize: bool = True) -> Path:
    """The ONNX file of a Hugging Face model folder, exported on first use and cached beside it."""
    folder = Path(folder)
    target = cache_file(folder, quantize=quantize)
    if target.is_file():
        return target
    target.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=_partial_prefix(os.getpid()), dir=target.parent) as tmp:
        built = _export(folder, Path(tmp), quantize)
        os.replace(built, target)  # same folder, so the rename is atomic
    return target


class ExportStopped(RuntimeError):
    """:func:`export_apart` killed the export (asked to stop, or out of time) and removed what it had written."""


class ExportTimedOut(ExportStopped):
    """:func:`export_apart` killed the export because it took over its ``timeout``."""


class ExportFailed(RuntimeError):
    """:func:`export_apart`: the export raised (its error is the message), or its process died."""


def export_apart(folder: Path | str, *, should_stop: Callable[[], bool] | None = None, timeout: float | None = None,
                 export: Callable[[str], object] = onnx_file, poll_s: float = 0.2) -> None:
    """``export(folder)`` (:func:`onnx_file`) in a spawned process (never a fork of a process running threads),
    killed once ``should_stop()`` says so (:class:`ExportStopped`) or after ``timeout`` seconds
    (:class:`ExportTimedOut`, one), and the partial files are removed. Costs the child's imports of torch and the
    rest (about 8 s here) over an export in a process that has them; a torch export in process cannot be cut short."""
    if should_stop is not None and should_stop():
        raise ExportStopped(f"stopped before the export of {folder} started")
    spawn = multiprocessing.get_context("spawn")
    reader, writer = spawn.Pipe(duplex=False)
    child = spawn.Process(target=_export_child, args=(export, str(folder), writer, os.getpid()), daemon=True,
                          name="finsent-onnx-export")
    started = time.monotonic()
    child.start()
    writer.close()  # the child's end: a child that dies leaves the reader at EOF
    # The child ignores SIGTERM, with which multiprocessing ends daemon children at exit before it joins them: a
    # process that exits while a thread of its waits here (a daemon thread) kills the export first instead.
    end = multiprocessing.util.Finalize(None, _end_export, args=(child, str(folder)), exitpriority=0)
    why = error = None
    stopped: type[ExportStopped] = ExportStopped
    try:
        while why is None and child.is_alive():
            child.join(poll_s)
            if not child.is_alive():
                break
            if should_stop is not None and should_stop():
                why = "asked to stop"
            elif timeout is not None and time.monotonic() - started > timeout:
                why, stopped = f"took over {timeout:g} s", ExportTimedOut
        if why is None:
            try:
                error = reader.recv()  # the child has ended: its word, or the end of the pipe at once
            except EOFError:
                error = f"its process died (exit code {child.exitcode})"
            if error is not None and should_stop is not None and should_stop():  # the stop wins over its failure
                raise ExportStopped(f"the export of {folder} was asked to stop; its process had ended: {error}")
    finally:
        end()  # stopped, out of time, or this process interrupted (Ctrl-C): the child is killed
        reader.close()
    if why is not None:
        raise stopped(f"the export of {folder} {why}: killed after {time.monotonic() - started:.1f} s")
    if error is not None:
        raise ExportFailed(f"ONNX export of {folder} failed: {error}")


def _end_export(child: Any, folder: str) -> None:
    """Kill the export's process if it still runs, and remove what it wrote (a kill skips its own clean-up)."""
    if child.is_alive():
        child.kill()
        child.join()
        remove_partial_export(folder, child.pid)


def _export_child(export: Callable[[str], object], folder: str, conn: Any, parent: int) -> None:
    """In the spawned process: export, then say None (done) or the error. A Ctrl-C in a terminal reaches the
    whole process group, and ``finsent down`` or a service manager SIGTERMs every process of the family: the parent
    acts on it (a stop kills the child), rather than reading a stop as a failed export (a worker then exported the
    model in its scorer process, holding up scoring and the stop; a scheduler recorded the retrain ``failed``).

    Temporary files (the ONNX optimiser's and quantiser's copies of the model, up to a few hundred MB) go to a
    folder under this process's partial prefix in the model's cache, which a kill's :func:`remove_partial_export`
    removes; in /tmp they stayed. A parent that dies without killing this process (SIGKILL, the OOM killer) ends it
    too, with what it wrote: nobody would read its word, and a hung export would run on for good."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_end_with_parent, args=(parent, folder), name="finsent-parent-watch", daemon=True).start()
    scratch = Path(folder) / CACHE_DIR / f"{_partial_prefix(os.getpid())}tmp"
    try:
        scratch.mkdir(parents=True, exist_ok=True)  # in the try: a folder it cannot write is the export's failure
        tempfile.tempdir = str(scratch)
        export(folder)
    except Exception as exc:  # noqa: BLE001 - the parent raises it as ExportFailed
        conn.send(f"{type(exc).__name__}: {exc}")
    else:
        conn.send(None)
    finally:
        conn.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _end_with_parent(parent: int, folder: str, poll_s: float = 0.5) -> None:
    """In the export's process: exit once the parent is gone (this process is then another's child)."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    log.warning("the process that asked for the ONNX export of %s is gone: the export ends", folder)
    remove_partial_export(folder, os.getpid())
    os._exit(1)


def _export(folder: Path, tmp: Path, quantize: bool) -> Path:
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoTokenizer

    from model.base_models import quiet_transformers
    from model.first_token import first_token_only
    from model.pooling import load_classifier

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    # sdpa: a graph ONNX Runtime runs as plain MatMul/Softmax (its fused attention quantised
    # worse in the measurement of model.quantization).
    model = first_token_only(load_classifier(folder, local_files_only=True, attn_implementation="sdpa")).eval()
    sample = dict(tokenizer(["shares rose after the results", "profit fell"], padding=True, return_tensors="pt"))
    # Positional, in the order of forward()'s parameters: exported from a kwargs dict, the graph
    # gave the same logits whatever its input.
    names = list(inspect.signature(model.forward).parameters)[: len(sample)]
    if set(names) != set(sample):
        raise ValueError(f"{folder}: forward() does not take {sorted(sample)} as its first parameters")
    raw = tmp / "raw.onnx"
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant for this graph
        torch.onnx.export(model, tuple(sample[n] for n in names), str(raw), dynamo=False, input_names=names,
                          output_names=["logits"], opset_version=17,
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "logits": {0: "batch"}})
    config = model.config
    optimised = optimizer.optimize_model(str(raw), model_type="bert", opt_level=1,
                                         num_heads=getattr(config, "num_attention_heads", 0),
                                         hidden_size=getattr(config, "hidden_size", 0))
    fp32 = tmp / "fp32.onnx"
    optimised.save_model_to_file(str(fp32))
    if not quantize:
        return fp32
    int8 = tmp / "int8.onnx"
    keep = fp32_nodes([node.name for node in optimised.model.graph.node if node.op_type == "MatMul"])
    root = logging.getLogger()
    root.addFilter(_without_preprocessing_advice)
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.removeFilter(_without_preprocessing_advice)
    return int8


def _without_preprocessing_advice(record: logging.LogRecord) -> bool:
    """Drops the quantiser's root-logger warning that the graph was not pre-processed: the transformer
    optimiser above did the fusions, and the quantiser infers the shapes itself. Users of onnx-int8 saw
    the warning, with a link to an image-classification example, on every promotion."""
    return not record.getMessage().startswith("Please consider to run pre-processing before quantization")


class OnnxClassifier:
    """An ONNX Runtime session called like a transformers classifier: ``model(**inputs).logits``."""

    def __init__(self, path: Path | str, config: Any, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (the cores)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        import numpy as np
        import torch

        feed = {name: inputs[name].numpy() for name in self.input_names if name in inputs}
        for name in self.input_names:  # e.g. token_type_ids the tokenizer did not return
            feed.setdefault(name, np.zeros_like(feed["input_ids"]))
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))
