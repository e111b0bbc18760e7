"""The scorer the stream worker (and ``finsent model predict``) uses.

Loads a sequence classifier once; ``score(texts)`` collapses links (:mod:`model.input_text`),
tokenises, splits long texts (rule in :mod:`model.chunking`), runs length-sorted, dynamically
padded batches under ``torch.inference_mode`` (bf16 autocast on a CPU that multiplies bf16 in
hardware, :mod:`model.quantization`), divides the logits by the model's temperature and adds its
per-label biases (:mod:`model.calibration`), and returns one :class:`finsent.schemas.Sentiment` per text, in order.
A lock makes one Scorer safe to share between threads (tokenizers are not re-entrant).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from finsent.schemas import LABELS, Sentiment
from model import chunking
from model.base_models import quiet_transformers
from model.calibration import bias_of, temperature_of
from model.heap import release_freed_memory
from model.input_text import for_model
from model.labels import model_label_order
from model.padding import pad_batch
from model.requirements import check_folder
from model.token_ids import plain_ids

log = logging.getLogger(__name__)

MAX_CHUNKS = 32  # windows read of one long text (model.chunking): its head, at most this many


class ScorerUnavailable(RuntimeError):
    """The scorer can score nothing right now (its process cannot start): the caller retries the
    batch rather than blame its texts."""


class ScorerCrashed(ScorerUnavailable):
    """The scorer's process died on these texts (twice, for a single text): memory, or a text that
    crashes the model. ``hung``: it went silent and was killed (each further try of a text that
    hangs it costs the whole silence limit)."""

    def __init__(self, message: str, *, hung: bool = False) -> None:
        super().__init__(message)
        self.hung = hung


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for but torch sees no CUDA device")
    return device


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of the Linear layers (CPU only)."""
    import warnings

    import torch

    # torch 2.15 (pinned) deprecates its quantized tensors; the README says the int8 mode relies on them. Without the
    # filter every `finsent bench model` round repeats the warning, since the bench measures int8 as a reference.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence ([CLS] … [SEP] for BERT)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    raise ValueError(f"cannot find where {type(tokenizer).__name__} puts its special tokens")


# Models whose position ids start after the pad id (RoBERTa's family): the first pad_token_id + 1 of
# max_position_embeddings are never a token's position.
_PAD_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "data2vec-text", "roberta-prelayernorm", "xmod"}
_NO_LIMIT = 1_000_000  # transformers' "no limit" is 1e30; no encoder this project runs reads a million tokens


def length_limit(config: Any, tokenizer_max: Any) -> int | None:
    """The most tokens (special ones included) the model reads in one sequence: the tokenizer's
    ``model_max_length`` when it states one, and what the model's position embeddings hold; None if
    neither says. A longer sequence fails in the embeddings (a tensor size error)."""
    limits = [tokenizer_max] if isinstance(tokenizer_max, int) and 0 < tokenizer_max < _NO_LIMIT else []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        pad_offset = getattr(config, "model_type", None) in _PAD_OFFSET_POSITIONS
        offset = (getattr(config, "pad_token_id", None) or 0) + 1 if pad_offset else 0
        limits.append(positions - offset)
    return min(limits) if limits else None


def to_sentiment(probs: list[float]) -> Sentiment:
    """Probabilities in LABELS order → Sentiment (score = P(pos) − P(neg))."""
    p = dict(zip(LABELS, (float(x) for x in probs)))
    label = max(p, key=p.get)
    score = max(-1.0, min(1.0, p["positive"] - p["negative"]))
    return Sentiment(label=label, score=score, probabilities=p, confidence=p[label])


class Scorer:
    def __init__(self, model: Any, tokenizer: Any, *, version: str, device: str = "cpu",
                 max_length: int = 128, batch_size: int = 64, max_chunks: int = MAX_CHUNKS,
                 label_order: list[str] | None = None, precision: str = "fp32") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.version = version
        self.device = device
        limit = length_limit(model.config, getattr(tokenizer, "model_max_length", None))
        if limit is not None and max_length > limit:  # the rest of a longer text goes in further chunks
            log.warning("max_length %d is more tokens than model %s reads: texts are scored in chunks of %d",
                        max_length, version, limit)
            max_length = limit
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_chunks = max_chunks
        self.precision = precision  # fp32, fp16 (GPU), bf16 (CPU autocast), int8 or onnx-int8
        order = label_order or model_label_order(model.config.id2label)
        # Column of each of LABELS in the model's output.
        self._columns = [order.index(label) for label in LABELS]
        # model.calibration: T = 1 and no bias when uncalibrated
        self.temperature = temperature_of(model.config)
        self.bias: list[float] = bias_of(model.config)  # LABELS order
        self._lock = threading.Lock()
        self._prefix, self._suffix = special_tokens(tokenizer)
        self._special = len(self._prefix) + len(self._suffix)

    @property
    def quantized(self) -> bool:
        return self.precision in ("int8", "onnx-int8")

    @classmethod
    def load(cls, path_or_ref: str | Path, *, registry: Any = None, device: str = "auto",
             max_length: int = 128, batch_size: int = 64, quantize: Literal["int8", "onnx-int8", "bf16"] | None = None,
             threads: int | None = None) -> Scorer:
        """Load a model folder, a registry version or ``champion`` (needs ``registry``).

        ``quantize``: ``int8`` is torch's dynamic quantisation of the Linear layers; ``onnx-int8``
        runs an int8 ONNX Runtime export instead (:mod:`model.onnx_runtime`); ``bf16`` keeps the fp32
        weights and runs the forward pass in bf16 autocast. All three apply on CPU only; a GPU runs
        the model in half precision. :class:`model.requirements.UnscorableModel` (a ValueError) for a model whose
        metadata requires a feature this code does not know."""
        import torch
        from transformers import AutoTokenizer

        from model.first_token import first_token_only
        from model.pooling import load_classifier

        path = registry.path(path_or_ref) if registry is not None else Path(path_or_ref)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
        check_folder(path)  # a model that needs what this code does not know would score wrongly: refused
        if threads:
            torch.set_num_threads(threads)
        # oneDNN (bf16 matmuls) keeps up to 1024 compiled kernels, one per input shape, a few MB each;
        # with dynamic padding almost every batch is a new shape. Read on first use, so it binds
        # when the scorer is the process's first model; a value in the environment wins.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
        dev = pick_device(device)
        quiet_transformers()
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if quantize == "onnx-int8" and dev == "cpu":
            from transformers import AutoConfig

            from model.onnx_runtime import OnnxClassifier, onnx_file

            model = OnnxClassifier(onnx_file(path), AutoConfig.from_pretrained(str(path), local_files_only=True),
                                   threads=threads)
            return cls(model, tokenizer, version=_version_of(path), device=dev, max_length=max_length,
                       batch_size=batch_size, precision="onnx-int8")
        model = first_token_only(load_classifier(path, local_files_only=True))
        model.eval()
        precision = "fp32"
        if dev == "cuda":
            model = model.half().to(dev)  # half precision on GPU: twice the throughput, same labels
            precision = "fp16"
        elif quantize == "int8":
            model = quantize_int8(model)
            precision = "int8"
        elif quantize == "bf16":
            precision = "bf16"
        return cls(model, tokenizer, version=_version_of(path), device=dev, max_length=max_length,
                   batch_size=batch_size, precision=precision)

    @classmethod
    def from_settings(cls, settings: Any, ref: str | Path = "champion", *, registry: Any = None) -> Scorer:
        """Load ``ref`` the way the settings say (device, max_length, batch size, threads, quantisation)."""
        from model.quantization import resolve_quantize
        from model.registry import Registry

        registry = registry if registry is not None else Registry(settings.models_path)
        return cls.load(ref, registry=registry, device=settings.device, max_length=settings.max_length,
                        batch_size=settings.model_batch_size, threads=settings.model_threads,
                        quantize=resolve_quantize(settings.model_quantize))

    def score(self, texts: list[str]) -> list[Sentiment]:
        if not texts:
            return []
        with self._lock:
            probs = self._probabilities(list(texts))
        return [to_sentiment(p) for p in probs]

    def predict_proba(self, texts: list[str], on_batch: Callable[[], None] | None = None) -> list[list[float]]:
        """Probabilities in LABELS order, one row per text. ``on_batch`` is called after each forward
        pass (the scorer process's heartbeat: :mod:`model.scorer_process`)."""
        if not texts:
            return []
        with self._lock:
            return self._probabilities(list(texts), on_batch)

    def _probabilities(self, texts: list[str], on_batch: Callable[[], None] | None = None) -> list[list[float]]:
        import torch

        window = max(1, self.max_length - self._special)
        model_texts = [for_model(t) for t in texts]
        encoded = plain_ids(self.tokenizer, model_texts)
        chunks: list[list[int]] = []
        owner: list[int] = []
        for i, ids in enumerate(encoded):
            for piece in chunking.split_tokens(ids, window, self.max_chunks):
                chunks.append(self._prefix + piece + self._suffix)
                owner.append(i)
        chunk_probs: list[list[float]] = [[]] * len(chunks)
        # One autocast region for all batches: it casts each weight to bf16 once per call, not per batch.
        bf16 = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")
        bias = torch.tensor(self.bias, dtype=torch.float32, device=self.device)
        with torch.inference_mode(), bf16:
            for batch in chunking.length_sorted_batches([len(c) for c in chunks], self.batch_size):
                padded = pad_batch([chunks[j] for j in batch], self.tokenizer)
                inputs = {k: v.to(self.device) for k, v in padded.items()}
                logits = self.model(**inputs).logits.float()
                out = torch.softmax(logits[:, self._columns] / self.temperature + bias, dim=-1).cpu().tolist()
                for j, row in zip(batch, out):
                    chunk_probs[j] = row
                if on_batch is not None:
                    on_batch()
        release_freed_memory()  # model.heap: what the activations freed goes back to the OS
        per_text: list[list[list[float]]] = [[] for _ in texts]
        weights: list[list[int]] = [[] for _ in texts]
        for j, i in enumerate(owner):
            per_text[i].append(chunk_probs[j])
            weights[i].append(len(chunks[j]))
        return [chunking.aggregate(p, w) if len(p) > 1 else p[0] for p, w in zip(per_text, weights)]


def _version_of(path: Path) -> str:
    meta = path / "metadata.json"
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text(encoding="utf-8"))["version"])
        except (ValueError, KeyError):
            log.warning("unreadable %s; naming the model after its folder", meta)
    return f"local:{os.path.basename(os.path.normpath(path))}"
