"""The clients and helpers a drift check or a retrain needs, opened once per process.

``Context.open(settings)`` connects; jobs receive the context rather than building clients.
Also the small shared reads and writes: fresh labels, control messages, scorer cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from finsent.schemas import ControlMessage, utc_now
from finsent.settings import Settings
from retrain.conflicts import ResolvedLabel, Unresolved, parse_annotators, resolve
from retrain.label_store import fetch_labels
from retrain.metrics import RetrainMetrics

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    es: Any
    registry: Any  # model.registry.Registry
    producer: Any  # kafka-python producer
    metrics: RetrainMetrics
    clock: Callable[[], datetime] = utc_now
    _scorers: dict[str, Any] = field(default_factory=dict)
    _scorer_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings, *, metrics: RetrainMetrics | None = None,
             clock: Callable[[], datetime] = utc_now) -> Context:
        from finsent import clients
        from model.registry import Registry

        es = clients.elasticsearch(settings)
        return cls(settings=settings, es=es, registry=Registry(settings.models_path, es=es, index=settings.index("models")),
                   producer=clients.kafka_producer(settings), metrics=metrics or RetrainMetrics(), clock=clock)

    def close(self) -> None:
        self.producer.close(timeout=30)
        self.es.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- model ---------------------------------------------------------------------------
    def scorer(self, version: str) -> Any:
        """A scorer for ``version``, loaded once (the champion is scored at every check)."""
        from model.scorer import Scorer

        with self._scorer_lock:
            if version not in self._scorers:
                self._scorers.clear()  # keep one model in memory
                self._scorers[version] = Scorer.load(version, registry=self.registry, device=self.settings.device,
                                                     max_length=self.settings.max_length)
            return self._scorers[version]

    # --- labels --------------------------------------------------------------------------
    def fresh_labels(self, champion_meta: dict[str, Any] | None) -> tuple[list[ResolvedLabel], list[Unresolved]]:
        """Resolved labels newer than the champion's training data.

        A champion made by retraining records ``labels_until`` (the newest label it saw); one
        trained from files only has seen no label, so every label is fresh to it.
        """
        cutoff = None
        if champion_meta and champion_meta.get("labels_until"):
            cutoff = datetime.fromisoformat(champion_meta["labels_until"])
        resolved, unresolved = resolve(fetch_labels(self.es, self.settings, since=cutoff),
                                       parse_annotators(self.settings.trusted_annotators))
        return resolved, unresolved

    # --- control topic -------------------------------------------------------------------
    def publish_control(self, message: ControlMessage) -> None:
        """Send to ``<prefix>.control`` and wait until Kafka has it."""
        future = self.producer.send(self.settings.topic("control"), key=b"control", value=message.to_json())
        self.producer.flush(timeout=30)
        future.get(timeout=30)
        log.info("published %s for model %s on %s", message.action, message.model_version, self.settings.topic("control"))


def flat_details(figures: dict[str, Any]) -> dict[str, float | int | str | bool | None]:
    """Control-message details are flat scalars; lists and dicts become short strings."""
    out: dict[str, float | int | str | bool | None] = {}
    for key, value in figures.items():
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)[:500]
    return out
