"""A batch of token-id lists padded into tensors in one vectorised step.

``tokenizer.pad`` checks and converts each item in Python: 35-59 us a text. On the GPU, where the
model's forward pass is cheap, that was a sixth to a third of the host's time per scored batch
(BENCHMARKS.md, GPU); on the CPU, a few percent. Here the ids go into one flat array and land in the padded matrix
through the attention mask. Same ids, same mask, same side as the tokenizer pads.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np


def pad_batch(rows: Sequence[Sequence[int]], tokenizer: Any) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` (int64 tensors) of ``rows`` padded to the longest, on the
    tokenizer's padding side with its pad id. A tokenizer without a pad id pads its own way (and says why)."""
    import torch

    if tokenizer.pad_token_id is None:
        return tokenizer.pad({"input_ids": list(rows)}, return_tensors="pt")
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max(initial=0))
    columns = np.arange(width)
    if tokenizer.padding_side == "left":
        mask = columns >= (width - lengths)[:, None]
    else:
        mask = columns < lengths[:, None]
    ids = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int64)
    # Row-major order of the mask's True cells is the rows' order, on either side.
    ids[mask] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}
