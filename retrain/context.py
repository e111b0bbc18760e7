"""The clients and helpers a drift check or a retrain needs, opened once per process.

``Context.open(settings)`` connects; jobs receive the context rather than building clients.
Also the small shared reads and writes: fresh labels, control messages, scorer cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from finsent.schemas import ControlMessage, LabelRecord, utc_now
from finsent.settings import Settings
from retrain.conflicts import ResolvedLabel, Unresolved, parse_annotators, resolve, with_related
from retrain.label_intake import FUTURE_TOLERANCE
from retrain.label_store import StoredLabel, fetch_labels, fetch_labels_of
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
        from finsent import clients, topology
        from model.registry import mirrored_registry

        es = clients.elasticsearch(settings)
        topology.update_mapping(es, settings, "retrain")  # an upgrade's new fields (labels_read_at) before an audit
        return cls(settings=settings, es=es, registry=mirrored_registry(settings, es),
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
        """A scorer for ``version``, loaded once (the champion is scored at every check), as the workers load
        it (``Scorer.from_settings``: chunk length, quantisation): the promotion gate and the performance monitor
        judge the model as served (int8 changed 54 of 1,338 validation labels of an fp32 champion, MODEL.md)."""
        from model.scorer import Scorer

        with self._scorer_lock:
            if version not in self._scorers:
                self._scorers.clear()  # keep one model in memory
                self._scorers[version] = Scorer.from_settings(self.settings, version, registry=self.registry)
            return self._scorers[version]

    def release_scorer(self, version: str) -> None:
        """Drop ``version``'s cached scorer, if cached: a challenger rejected, superseded, failed, deleted or left
        unjudged is never scored again, and held here it kept a model's memory (about 90 MB for MiniLM, a larger base
        far more) until the next check loaded the champion."""
        with self._scorer_lock:
            self._scorers.pop(version, None)

    # --- labels --------------------------------------------------------------------------
    def all_labels(self) -> list[StoredLabel]:
        """Every stored label, oldest first: a retrain that its gate (on a query of the fresh labels alone) lets
        through reads them once, for :meth:`fresh_labels` and :meth:`earlier_labels` both."""
        return fetch_labels(self.es, self.settings)

    def fresh_labels(self, champion_meta: dict[str, Any] | None, stored: Sequence[StoredLabel] | None = None
                     ) -> tuple[list[ResolvedLabel], list[Unresolved]]:
        """Resolved labels of the documents labelled since the champion's training data: queried, or picked from
        ``stored`` (:meth:`all_labels`) when given.

        A champion made by retraining records ``labels_until`` (the newest label it saw) and
        ``labels_read_at`` (when it read them): a label dated after the first, or stored after the
        second however it is dated (a back-dated import), is fresh. One trained from files only has
        seen no label, so every label is fresh to it. A document with a fresh label is resolved over
        all its labels, older ones included: an earlier trusted label still wins over a later
        untrusted one.
        """
        now = self.clock()
        cutoff = label_cutoff(champion_meta, now)
        if champion_meta and cutoff != meta_time(champion_meta, "labels_until"):
            log.warning("the champion's labels_until %s is in the future (a label was dated ahead): labels after "
                        "%s count as fresh", champion_meta["labels_until"], cutoff.isoformat() if cutoff else None)
        read_since = meta_time(champion_meta or {}, "labels_read_at")
        if stored is None:
            records = fetch_labels(self.es, self.settings, since=cutoff, read_since=read_since)

            def related(doc_ids: set[str], texts: set[str]) -> Iterable[LabelRecord]:
                return fetch_labels_of(self.es, self.settings, doc_ids=doc_ids, texts=texts, until=cutoff)
        else:
            records = [label for label in stored if is_fresh(label, cutoff, read_since)]
            older = [label for label in stored if cutoff is not None and label.labeled_at <= cutoff]

            def related(doc_ids: set[str], texts: set[str]) -> Iterable[LabelRecord]:
                return older  # a superset: with_related keeps the exact matches
        resolved, unresolved, future = resolve_fresh(
            records, related, cutoff=cutoff, now=now, trusted=parse_annotators(self.settings.trusted_annotators))
        if future:
            log.warning("left out %d label(s) dated in the future (the latest %s): they would hold back every "
                        "later label", len(future), max(r.labeled_at for r in future).isoformat())
        return resolved, unresolved

    def earlier_labels(self, fresh: list[ResolvedLabel], stored: Sequence[StoredLabel] | None = None
                       ) -> list[ResolvedLabel]:
        """Resolved labels of the documents with no fresh label: those earlier retrains trained on, and those
        they held back to judge a challenger. Their judging is done, so the next challenger trains on them:
        held back once, a human label would otherwise never reach a model. Of ``stored`` when given: the read
        :meth:`fresh_labels` picked from, so a label stored meanwhile is not trained on here and then fresh (and
        perhaps held back to judge this challenger's successor) next time."""
        now = self.clock()
        resolved, _, _ = resolve_fresh(fetch_labels(self.es, self.settings) if stored is None else stored,
                                       lambda doc_ids, texts: [], cutoff=None, now=now,
                                       trusted=parse_annotators(self.settings.trusted_annotators))
        fresh_keys = {label.key for label in fresh}
        return [label for label in resolved if label.key not in fresh_keys]

    # --- control topic -------------------------------------------------------------------
    def publish_control(self, message: ControlMessage) -> None:
        """Send to ``<prefix>.control`` and wait until Kafka has it."""
        future = self.producer.send(self.settings.topic("control"), key=b"control", value=message.to_json())
        self.producer.flush(timeout=30)
        future.get(timeout=30)
        log.info("published %s for model %s on %s", message.action, message.model_version, self.settings.topic("control"))


def meta_time(record: dict[str, Any], key: str) -> datetime | None:
    """A time a model's metadata or a retrain's audit record holds (ISO 8601), or None."""
    value = record.get(key)
    return datetime.fromisoformat(value) if value else None


def is_fresh(label: StoredLabel, since: datetime | None, read_since: datetime | None) -> bool:
    """Whether :func:`retrain.label_store.fetch_labels` with ``since`` and ``read_since`` would select this label."""
    if since is None:
        return True
    return label.labeled_at > since or (read_since is not None and label.indexed_at is not None
                                        and label.indexed_at > read_since)


def label_cutoff(champion_meta: dict[str, Any] | None, now: datetime) -> datetime | None:
    """Labels after this are fresh to the champion: its ``labels_until``, or None (all) when it has none.

    A ``labels_until`` in the future came from a label dated ahead (before intake refused them);
    kept, no label would be fresh again. The champion's creation time stands in for it then: it
    saw no label made later.
    """
    until = meta_time(champion_meta or {}, "labels_until")
    if until is None or until <= now + FUTURE_TOLERANCE:
        return until
    created = champion_meta.get("created_at") if champion_meta else None
    return min(datetime.fromisoformat(created), now) if created else now


def resolve_fresh(fresh: Sequence[LabelRecord], related: Callable[[set[str], set[str]], Iterable[LabelRecord]], *,
                  cutoff: datetime | None, now: datetime, trusted: frozenset[str]
                  ) -> tuple[list[ResolvedLabel], list[Unresolved], list[LabelRecord]]:
    """The labels after ``cutoff`` resolved with the earlier labels of their documents (``related``
    fetches those, see :func:`retrain.conflicts.with_related`), and the labels left out as dated
    in the future.

    Intake refuses a future ``labeled_at``, but one sent straight to the topic (or stored before
    that check) would become ``labels_until`` and keep every later label from being fresh.
    """
    latest = now + FUTURE_TOLERANCE
    future = [r for r in fresh if r.labeled_at > latest]
    fresh = [r for r in fresh if r.labeled_at <= latest]
    records = with_related(fresh, related) if cutoff is not None and fresh else fresh
    resolved, unresolved = resolve(records, trusted)
    return resolved, unresolved, future


def flat_details(figures: dict[str, Any]) -> dict[str, float | int | str | bool | None]:
    """Control-message details are flat scalars; lists and dicts become short strings."""
    out: dict[str, float | int | str | bool | None] = {}
    for key, value in figures.items():
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)[:500]
    return out
