"""Token ids of whole texts, straight from a fast tokenizer's Rust backend.

The scorer tokenises each text whole, without special tokens, and cuts it into windows itself
(``model/chunking.py``). Called through the tokenizer's Python ``__call__``, each text's encoding is
converted into Python lists of every field (ids, type ids, masks): 61 us a text for texts like the
training files', against 23 us for the ids alone from the backend's ``encode_batch_fast``, which
also skips the character offsets. On the GPU the scorer waits on such host work (BENCHMARKS.md,
GPU). A tokenizer without a Rust backend goes through its own ``__call__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def plain_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """The ids of each text, without special tokens and untruncated."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    # The Python wrapper sets truncation and padding on the backend at each call and leaves them set.
    backend.no_truncation()
    backend.no_padding()
    return [encoding.ids for encoding in backend.encode_batch_fast(list(texts), add_special_tokens=False)]
