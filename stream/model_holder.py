"""The worker's current model, hot-swapped between batches.

A control message asks for a model by reference; it loads in a background thread while
the old model keeps scoring, and the next batch picks the new one up (a batch holds the
model it started with, so no batch mixes two models). A load that fails
keeps the old model (and is logged and counted), so a bad promotion never stops scoring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from finsent.schemas import Sentiment

log = logging.getLogger(__name__)


class Scorer(Protocol):
    version: str

    def score(self, texts: Sequence[str]) -> list[Sentiment]: ...


ScorerLoader = Callable[[str], Scorer]


class ModelHolder:
    def __init__(self, loader: ScorerLoader, *, on_swap: Callable[[Scorer], None] | None = None,
                 on_load_failure: Callable[[str, BaseException], None] | None = None) -> None:
        self.loader = loader
        self.on_swap = on_swap or (lambda scorer: None)
        self.on_load_failure = on_load_failure or (lambda ref, exc: None)
        self._current: Scorer | None = None
        self._loading: asyncio.Task[Any] | None = None
        # One thread for inference: batches are scored one after another; a second for loads,
        # so a load never waits behind inference and inference never waits for a load.
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="finsent-score")
        self._loader_pool = ThreadPoolExecutor(1, thread_name_prefix="finsent-load")

    async def load_initial(self, ref: str) -> Scorer:
        loop = asyncio.get_running_loop()
        self._current = await loop.run_in_executor(self._loader_pool, self.loader, ref)
        self.on_swap(self._current)
        return self._current

    def request(self, ref: str) -> asyncio.Task[Any]:
        """Start loading ``ref`` in the background (a newer request replaces an older one)."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()  # the thread finishes, but its result is ignored
        self._loading = asyncio.get_running_loop().create_task(self._load(ref))
        return self._loading

    async def _load(self, ref: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            scorer = await loop.run_in_executor(self._loader_pool, self.loader, ref)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failed load keeps the old model
            log.error("loading model %r failed, keeping %s: %s", ref, self.version, exc)
            self.on_load_failure(ref, exc)
            return
        # A batch takes its model once, at its start (current()), so swapping the reference
        # now never mixes two models within a batch: the next batch gets the new one.
        log.info("model %s loaded; the next batch scores with it", scorer.version)
        self._current = scorer
        self.on_swap(scorer)

    def current(self) -> Scorer:
        """The model for the next batch."""
        if self._current is None:
            raise RuntimeError("no model loaded")
        return self._current

    @property
    def version(self) -> str | None:
        return self._current.version if self._current is not None else None

    async def score(self, scorer: Scorer, texts: Sequence[str]) -> list[Sentiment]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.inference, scorer.score, list(texts))

    def close(self) -> None:
        self.inference.shutdown(wait=False, cancel_futures=True)
        self._loader_pool.shutdown(wait=False, cancel_futures=True)
