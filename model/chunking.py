"""The long-text rule, pure and testable without a model.

A text whose tokens do not fit in one window is split into consecutive windows of at most
``max_length - special`` tokens (no overlap), at most ``max_chunks`` of them (the head of a very
long text; beyond ``max_chunks * window`` tokens the rest is not read). Each window is scored on
its own and the text's probabilities are the mean of the windows' probabilities weighted by
their token counts, so every token counts the same whichever window it fell into.
"""

from __future__ import annotations

from collections.abc import Sequence


def split_tokens(ids: Sequence[int], window: int, max_chunks: int) -> list[list[int]]:
    if window < 1:
        raise ValueError("window must be at least one token")
    if not ids:
        return [[]]
    return [list(ids[i : i + window]) for i in range(0, len(ids), window)][:max_chunks]


def aggregate(chunk_probs: Sequence[Sequence[float]], weights: Sequence[int]) -> list[float]:
    """Token-weighted mean of the chunks' probability vectors (renormalised)."""
    total = sum(max(w, 1) for w in weights)
    n = len(chunk_probs[0])
    mean = [sum(p[k] * max(w, 1) for p, w in zip(chunk_probs, weights)) / total for k in range(n)]
    norm = sum(mean)
    return [m / norm for m in mean]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
