"""The worker's current model, hot-swapped between batches.

A control message asks for a model by reference; it loads in a background thread while
the old model keeps scoring, and the next batch picks the new one up (a batch leases the
model it started with, so no batch mixes two models). A load that fails
keeps the old model (and is logged and counted), so a bad promotion never stops scoring.
A model swapped out is closed (it leaves the scorer process) once no batch leases it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from finsent.schemas import Sentiment

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """A model that scores; one that holds resources (a process) also has ``close()``, and one in a
    process of its own ``renew()``."""

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
        self._loads: set[asyncio.Task[Any]] = set()  # running loads (the loop keeps only weak references)
        self._requests = 0  # model requests so far; only the latest one's model is swapped in
        self._leases: dict[int, int] = {}  # id(scorer) → batches scoring with it
        # One thread for inference: batches are scored one after another; a second for loads,
        # so a load never waits behind inference and inference never waits for a load.
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="finsent-score")
        self._loader_pool = ThreadPoolExecutor(1, thread_name_prefix="finsent-load")
        self._closed = False

    async def load_initial(self, ref: str) -> Scorer:
        loop = asyncio.get_running_loop()
        self._current = await loop.run_in_executor(self._loader_pool, self.loader, ref)
        self.on_swap(self._current)
        return self._current

    def request(self, ref: str) -> asyncio.Task[bool]:
        """Start loading ``ref`` in the background (a newer request wins over an older one). The task's result:
        whether the model was swapped in (False: the load failed, or a newer request superseded it, whose load may
        fail in turn; either way this model does not score)."""
        self._requests += 1
        task = asyncio.get_running_loop().create_task(self._load(ref, self._requests))
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        return task

    async def _load(self, ref: str, request: int) -> bool:
        loop = asyncio.get_running_loop()
        try:
            scorer = await loop.run_in_executor(self._loader_pool, self.loader, ref)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failed load keeps the old model
            log.error("loading model %r failed, keeping %s: %s", ref, self.version, exc)
            self.on_load_failure(ref, exc)
            return False
        if self._closed:  # the worker stops: this model would never score, and nothing else would close it
            self._retire(scorer)
            return True
        if request != self._requests:
            # Loads run one after another, so the newer request's model comes next.
            log.info("model %s loaded, but a newer one was asked for meanwhile; dropping it", scorer.version)
            self._retire(scorer)
            return False
        # A batch leases its model once, at its start, so swapping the reference now never
        # mixes two models within a batch: the next batch gets the new one.
        log.info("model %s loaded; the next batch scores with it", scorer.version)
        old, self._current = self._current, scorer
        self.on_swap(scorer)
        if old is not None and id(old) not in self._leases:
            self._retire(old)
        return True

    def current(self) -> Scorer:
        """The model for the next batch."""
        if self._current is None:
            raise RuntimeError("no model loaded")
        return self._current

    @contextlib.contextmanager
    def lease(self) -> Iterator[Scorer]:
        """The model for the next batch, held until the batch is scored."""
        scorer = self.current()
        key = id(scorer)  # stable: the lease holds the object
        self._leases[key] = self._leases.get(key, 0) + 1
        try:
            yield scorer
        finally:
            self._leases[key] -= 1
            if not self._leases[key]:
                del self._leases[key]
                if scorer is not self._current:
                    self._retire(scorer)

    def _retire(self, scorer: Scorer) -> None:
        close = getattr(scorer, "close", None)
        if close is not None:
            log.info("model %s is no longer used; closing it", scorer.version)
            # Ending a process may wait a moment: not on the event loop. After close() the pool takes no
            # more work, and a model left open would keep the scorer process (and its hold) to the end.
            if self._closed:
                threading.Thread(target=close, name="finsent-close", daemon=True).start()
            else:
                self._loader_pool.submit(close)

    @property
    def version(self) -> str | None:
        return self._current.version if self._current is not None else None

    async def score(self, scorer: Scorer, texts: Sequence[str]) -> list[Sentiment]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.inference, scorer.score, list(texts))

    async def renew(self, scorer: Scorer) -> bool:
        """Start the model's scorer process again (one that can, has ``renew()``); False if it cannot."""
        renew = getattr(scorer, "renew", None)
        if renew is None:
            return False  # in this process: only a restart of the worker renews it
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.inference, renew)
        return True

    def close(self) -> None:
        """Close the current model; one a batch still leases, or a load still running, closes when done."""
        self._closed = True
        self.inference.shutdown(wait=False, cancel_futures=True)
        # A load or close still running is not waited for: the scorer process exits with the worker.
        self._loader_pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self._current, "close", None)
        if close is not None:
            close()
