"""The packaged MiniLM in half precision, to travel to a device machine, and back in fp32 there.

A device call carries at most 64 MiB, and the base's fp32 weights alone are 87 MiB. Half
precision halves them; rounding each weight to fp16 moves it by at most 2^-11 of its size, and
the weights are upcast again before training starts from them (optimiser states need fp32).

    python -m bench.device.half_base TARGET                 # here: the packaged base, fp16
    python -m bench.device.half_base --to-fp32 SOURCE TARGET # there: an fp32 copy to train from
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

WEIGHTS = "model.safetensors"
KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def convert(source: Path, target: Path, dtype_name: str) -> Path:
    """Copy the Hugging Face folder ``source`` to ``target`` with its floating weights in ``dtype_name``."""
    import torch
    from safetensors.torch import load_file, save_file

    dtype = {"fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    if not (source / WEIGHTS).is_file():
        raise FileNotFoundError(f"{source} has no {WEIGHTS}")
    target.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    tensors = {k: v.to(dtype).contiguous() if v.is_floating_point() else v
               for k, v in load_file(source / WEIGHTS).items()}
    save_file(tensors, target / WEIGHTS, metadata={"format": "pt"})
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to-fp32", metavar="SOURCE", type=Path, help="an fp16 folder made by this module")
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.to_fp32:
        convert(args.to_fp32, args.target, "fp32")
    else:
        from model.base_models import DEFAULT_BASE, resolve_base

        convert(Path(resolve_base(DEFAULT_BASE)), args.target, "fp16")
    print(args.target)


if __name__ == "__main__":
    main()
