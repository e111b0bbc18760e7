"""Everything a worker process holds besides the Faust app: model, sink, control listener,
metrics and health. Built unconnected; :meth:`start` connects (DESIGN.md style)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from finsent.schemas import ControlMessage
from finsent.settings import Settings
from model.registry import CHAMPION, Registry
from stream.control import ControlListener
from stream.es_sink import Backoff, ElasticsearchSink
from stream.metrics import WorkerMetrics
from stream.model_holder import ModelHolder, ScorerLoader
from stream.stall import StallDetector

log = logging.getLogger(__name__)


def default_scorer_loader(settings: Settings, on_restart: Callable[[], None] | None = None) -> ScorerLoader:
    """Load ``champion``, a version or a path through the model registry (model/), in a scorer
    process (``on_restart`` is told each time one is started again) or in this process."""

    process = None  # one scorer process for every model: a hot swap loads the new one beside the old

    def load(ref: str):
        nonlocal process
        if settings.worker_scorer == "process":
            from model.scorer_process import ScorerProcess

            if process is None:
                process = ScorerProcess(settings, on_restart=on_restart)
            return process.load(ref)
        from model.scorer import Scorer

        # The model settings (device, threads, quantisation, batch size) apply to the worker too.
        return Scorer.from_settings(settings, ref)

    return load


class WorkerRuntime:
    def __init__(self, settings: Settings, scorer_loader: ScorerLoader | None, model_ref: str,
                 registry: CollectorRegistry) -> None:
        self.settings = settings
        self.model_ref = model_ref
        self.metrics = WorkerMetrics(registry)
        self.es_ok = True
        self.sink = ElasticsearchSink(settings, on_retry=self._on_es_retry, on_healthy=self._on_es_healthy)
        scorer_loader = scorer_loader or default_scorer_loader(settings, on_restart=self.metrics.scorer_restarts.inc)
        self.holder = ModelHolder(scorer_loader, on_swap=self._on_swap,
                                  on_load_failure=lambda ref, exc: self.metrics.model_load_failures.inc())
        self.control = ControlListener(settings, self._on_control)
        self.ready = asyncio.Event()
        # The last unexpected error of each step being retried (until_done), while it is: the agents retry
        # theirs at once, and one's success must not hide the other's failure.
        self._failures: dict[object, str] = {}
        # Raw-topic partitions owned after the last completed rebalance; None until the first.
        self.partitions: int | None = None
        self._swaps = 0
        self.stall = StallDetector(after_s=settings.worker_stall_after)  # fed by the app's timer

    def _on_es_retry(self, reason: str) -> None:
        self.es_ok = False
        self.metrics.es_retries.inc()

    def _on_es_healthy(self) -> None:
        self.es_ok = True

    def _on_swap(self, scorer: Any) -> None:
        self.metrics.model_info.info({"version": str(scorer.version)})
        if self._swaps:
            self.metrics.model_swaps.inc()
        self._swaps += 1
        log.info("scoring with model %s", scorer.version)

    def _on_control(self, ref: str, message: ControlMessage) -> None:
        task = self.holder.request(ref)
        task.add_done_callback(lambda done: self._control_done(message, done))

    def _control_done(self, message: ControlMessage, load: asyncio.Task[bool]) -> None:
        # The move order learns how the load ended: a move whose model does not score (its load failed, raised, or
        # was superseded by a newer request) may be asked for again, else a newer request that fails strands it.
        loaded = not load.cancelled() and load.exception() is None and load.result()
        self.control.order.done(message, loaded=loaded)

    def _initial_ref(self) -> str:
        """The model to start with: ``champion`` is read once from the registry's pointer, which gives the version
        and the number of its move, from which the control listener goes on (a late message of an older move is
        then ignored)."""
        if self.model_ref != CHAMPION:
            return self.model_ref
        pointer = Registry(self.settings.models_path).pointer()
        if pointer.champion is None:
            return self.model_ref  # the loader says there is none
        self.control.order.start_at(pointer.registry_id, pointer.sequence)
        log.info("starting with champion %s (move %d of registry %s)", pointer.champion, pointer.sequence,
                 pointer.registry_id or "without an id yet")
        return pointer.champion

    async def start(self) -> None:
        await self.control.start()  # first, so a promotion during the initial load is not missed
        # Before any control message is taken: the listener's task first runs at the next await.
        ref = self._initial_ref()
        await self.holder.load_initial(ref)
        await self.sink.start()
        self.ready.set()
        log.info("worker ready: model %s, topic %s → index %s", self.holder.version,
                 self.settings.topic("raw"), self.settings.index("docs"))

    def on_rebalance_end(self, assignment: Iterable[Any]) -> None:
        """The group has formed (again) and this worker's partitions are sought and resumed.
        Owning none is legitimate: a group can have more workers than partitions."""
        raw = self.settings.topic("raw")
        owned = [tp.partition for tp in assignment if tp.topic == raw]
        self.partitions = len(owned)
        self.metrics.partitions.set(self.partitions)
        self.metrics.keep_lag_of(owned)  # another worker reports the lag of the others now

    @property
    def failing(self) -> str | None:
        """What fails while a step is retried, or None."""
        return "; ".join(self._failures.values()) or None

    async def stop(self) -> None:
        await self.control.stop()
        await self.sink.stop()
        self.holder.close()

    async def until_done(self, what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``step`` until it succeeds: an unexpected error holds the stream, never skips it."""
        attempt = 0
        rng = random.Random()
        token = object()  # this call's entry in the failures
        try:
            while True:
                try:
                    return await step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - retried; the offsets stay uncommitted
                    self._failures[token] = f"{what}: {type(exc).__name__}: {exc}"
                    log.exception("%s failed; retrying the batch", what)
                    await asyncio.sleep(Backoff(base=0.5, cap=30).delay(attempt, rng))
                    attempt += 1
        finally:
            self._failures.pop(token, None)  # succeeded, or cancelled (a rebalance, the shutdown)

    def health(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "ready": self.ready.is_set(),
            "elasticsearch": self.es_ok,
            "processing": self.failing is None,
            "model_version": self.holder.version,
            "consuming": not self.stall.stalled,
            # Ready means consuming: a worker whose group has not formed yet reads nothing.
            "group": "joining" if self.partitions is None else "joined",
            "partitions": self.partitions,
        }
        if self.failing:
            checks["error"] = self.failing
        ok = all(checks[k] for k in ("ready", "elasticsearch", "processing", "consuming"))
        ok = ok and self.partitions is not None
        return ok, checks
