"""A [CLS]-pooled classifier with its last encoder block computed for the first token only.

A classifier that pools [CLS] reads one vector of the last block's output. That block's keys and
values still need every token, but its query, attention output and feed-forward layers do not:
computed for the first token alone, the logits are the full model's (to float rounding; a test
holds them to 1e-5) and a 6-block MiniLM does about 14% less matrix work per text.

Applied by the scorer, the ONNX export and training (whose loss reads only the logits, so the
gradients are the full model's; the saved weights keep their names). Only where the layout is known:
the encoder families in :data:`FAMILIES` (BERT's block: ``attention.self`` query/key/value,
``attention.output``, ``intermediate``, ``output``), whose classification heads read position 0,
with sdpa or eager attention. Anything else is left as it is.
"""

from __future__ import annotations

import functools
from typing import Any

FAMILIES = ("bert", "roberta")
ATTENTION = ("sdpa", "eager")


@functools.cache  # built on first use: importing this module does not import torch
def _module() -> type:
    import torch

    class FirstTokenBlock(torch.nn.Module):
        """A BERT block whose output is the first position's only: shape (batch, 1, hidden)."""

        def __init__(self, block: Any) -> None:
            super().__init__()
            # The block's own parts under their own names, so exported node names stay the same.
            self.attention = block.attention
            self.intermediate = block.intermediate
            self.output = block.output
            self.train(block.training)  # a new module starts in training mode: keep the block's

        def forward(self, hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
            heads = self.attention.self
            batch, tokens, _ = hidden_states.shape
            size = heads.attention_head_size
            first = hidden_states[:, :1]
            query = heads.query(first).view(batch, 1, -1, size).transpose(1, 2)
            key = heads.key(hidden_states).view(batch, tokens, -1, size).transpose(1, 2)
            value = heads.value(hidden_states).view(batch, tokens, -1, size).transpose(1, 2)
            # The block's mask is (batch, 1, queries, tokens), boolean (sdpa) or additive (eager):
            # the first query's row is the one needed.
            mask = attention_mask[:, :, :1] if attention_mask is not None else None
            context = torch.nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, scale=heads.scaling,
                dropout_p=heads.dropout.p if self.training else 0.0)  # the attention dropout of training
            attended = self.attention.output(context.transpose(1, 2).reshape(batch, 1, -1), first)
            return self.output(self.intermediate(attended), attended)

    return FirstTokenBlock


def _blocks(model: Any) -> Any:
    """The encoder's list of blocks, or None for a layout this module does not know."""
    return getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)


def is_cut(model: Any) -> bool:
    """Whether ``model``'s last block was cut to the first token (its other positions are gone)."""
    blocks = _blocks(model)
    return bool(blocks) and isinstance(blocks[-1], _module())


def applies(model: Any) -> bool:
    """Whether ``model`` is a [CLS]-pooled classifier of a family whose last block can be cut."""
    config = model.config
    blocks = _blocks(model)
    return (getattr(config, "model_type", None) in FAMILIES
            and getattr(config, "finsent_pooling", "cls") == "cls"
            and getattr(config, "_attn_implementation", None) in ATTENTION
            and not getattr(config, "is_decoder", False)
            and not getattr(config, "chunk_size_feed_forward", 0)
            and bool(blocks)
            and hasattr(blocks[-1], "attention") and hasattr(blocks[-1].attention, "self")
            and not is_cut(model))


def first_token_only(model: Any) -> Any:
    """``model`` with its last block cut to the first token where :func:`applies`, else as it is.
    Only the logits keep their meaning: the other positions of ``last_hidden_state`` are gone."""
    if applies(model):
        blocks = model.base_model.encoder.layer
        blocks[-1] = _module()(blocks[-1])
    return model
