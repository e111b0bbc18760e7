"""Mean pooling: the classifier head reads the mean of the token vectors instead of [CLS].

The packaged base (all-MiniLM-L6-v2) is a sentence-transformers model: it was trained to put a
sentence's meaning in the mean of its token vectors, never in [CLS]. ``MeanPooled`` wraps a
BERT-family ``…ForSequenceClassification`` and feeds that mean (padding excluded) to the same
dropout and Linear classifier. The saved folder is the wrapped model's own, with
``finsent_pooling: "mean"`` in its config; :func:`load_classifier` reads it back. (Plain
transformers would load such a folder with [CLS] pooling and give wrong labels: load it here.)

Not the default: trained the same way on both files in ../shared/data, mean pooling moved
validation accuracy from the analyst sentences to the tweets (FPB 0.865 → 0.844, tweets
0.861 → 0.871; overall 0.862 → 0.863). [CLS] keeps the analyst sentences above their 0.86
target; ``finsent model train --pooling mean`` is there for the other trade.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

CONFIG_KEY = "finsent_pooling"
POOLINGS = ("cls", "mean")


@functools.cache  # one class, built on first use: importing this module does not import torch
def _module() -> type:
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    from model.first_token import is_cut

    class MeanPooled(torch.nn.Module):
        def __init__(self, hf: Any) -> None:
            super().__init__()
            if not isinstance(getattr(hf, "classifier", None), torch.nn.Linear) or not hasattr(hf, "dropout"):
                raise ValueError(f"mean pooling needs a BERT-style head (dropout + one Linear), not {type(hf).__name__}")
            if is_cut(hf):  # the mean would be of the first position alone
                raise ValueError("mean pooling reads every position of the last block, and this model's last "
                                 "block was cut to the first token (model.first_token): load the model again")
            self.hf = hf
            self.config = hf.config

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            hidden = self.hf.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return SequenceClassifierOutput(logits=self.hf.classifier(self.hf.dropout(pooled)))

        def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
            self.hf.save_pretrained(path, **kwargs)

    return MeanPooled


def with_pooling(hf: Any, pooling: str | None = None) -> Any:
    """``hf`` with the head ``pooling`` asks for (default: what its config records, else cls), the
    choice recorded in its config so that the saved folder loads the same way."""
    pooling = pooling or getattr(hf.config, CONFIG_KEY, None) or "cls"  # no record: transformers' own [CLS]
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    hf.config.update({CONFIG_KEY: pooling})
    return hf if pooling == "cls" else _module()(hf)


def load_classifier(path: str | Path, **kwargs: Any) -> Any:
    """A saved classifier with the pooling it was trained with."""
    from transformers import AutoModelForSequenceClassification

    return with_pooling(AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs))
