"""Kafka topics and Elasticsearch index templates of DESIGN.md, and their idempotent bootstrap.

Mappings are explicit and ``dynamic: strict``: a field nobody declared is a mapping error
(and, in the worker, a dead letter), never a silent guess. They use only what the server
module ships (no analysis-common, no ingest pipelines, no ILM), so they work on the
integration-test distribution as on a full cluster.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from finsent.settings import Settings

log = logging.getLogger(__name__)

TOPICS: tuple[str, ...] = ("raw", "scored", "aggregates", "alerts", "labels", "control", "dlq")
# Control messages must reach every worker in order: one partition.
SINGLE_PARTITION_TOPICS = {"control"}

_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}
_TITLE = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}
_TEXT = {"type": "text"}
_FLOAT = {"type": "float"}
_INT = {"type": "integer"}
_PROBS = {"properties": {label: _FLOAT for label in ("negative", "neutral", "positive")}}
_COUNTS = {"properties": {label: _INT for label in ("negative", "neutral", "positive")}}

MAPPINGS: dict[str, dict[str, Any]] = {
    "docs": {
        "id": _KEYWORD, "source": _KEYWORD, "source_id": _KEYWORD, "url": _KEYWORD,
        "title": _TITLE, "text": _TEXT, "lang": _KEYWORD, "tickers": _KEYWORD,
        "published_at": _DATE, "ingested_at": _DATE, "scored_at": _DATE, "indexed_at": _DATE,
        "sentiment": {"properties": {
            "label": _KEYWORD, "score": _FLOAT, "probabilities": _PROBS, "confidence": _FLOAT,
        }},
        "model_version": _KEYWORD,
    },
    "aggregates": {
        "ticker": _KEYWORD, "window": _KEYWORD, "window_start": _DATE, "window_end": _DATE,
        "count": _INT, "counts": _COUNTS, "mean_score": _FLOAT, "weighted_mean_score": _FLOAT,
        "sentiment_z": _FLOAT, "volume_z": _FLOAT, "updated_at": _DATE,
    },
    "alerts": {
        "idempotency_key": _KEYWORD, "rule": _KEYWORD, "kind": _KEYWORD, "ticker": _KEYWORD,
        "window": _KEYWORD, "window_start": _DATE, "value": _FLOAT, "baseline": _FLOAT,
        "threshold": _FLOAT, "z": _FLOAT, "message": _TEXT,
        "documents": {"properties": {"id": _KEYWORD, "title": _TITLE, "url": _KEYWORD, "score": _FLOAT}},
        "dashboard_url": _KEYWORD, "created_at": _DATE, "delivered_at": _DATE,
        "status": _KEYWORD, "attempts": _INT, "last_error": _TEXT,
    },
    "labels": {
        "doc_id": _KEYWORD, "text": _TEXT, "label": _KEYWORD, "annotator": _KEYWORD,
        "source": _KEYWORD, "labeled_at": _DATE, "indexed_at": _DATE,
    },
    "models": {
        "version": _KEYWORD, "base_model": _KEYWORD, "parent_version": _KEYWORD,
        "created_at": _DATE, "promoted_at": _DATE, "status": _KEYWORD, "champion": {"type": "boolean"},
        "data_fingerprint": _KEYWORD, "metrics": {"type": "object", "enabled": False},
        "labels": _KEYWORD, "temperature": _FLOAT, "requires": _KEYWORD,
    },
    "drift": {
        "checked_at": _DATE, "monitor": _KEYWORD, "statistic": _FLOAT, "threshold": _FLOAT,
        "drift_detected": {"type": "boolean"}, "model_version": _KEYWORD,
        "details": {"type": "object", "enabled": False},
    },
    # One audit record per retrain decision (retrain/): promoted, rejected, superseded, skipped, stopped or failed.
    "retrain": {
        "decided_at": _DATE, "trigger": _KEYWORD, "decision": _KEYWORD, "reasons": _TEXT,
        "champion_version": _KEYWORD, "challenger_version": _KEYWORD, "fresh_labels": _INT,
        "fresh_train": _INT, "fresh_heldout": _INT, "earlier_labels": _INT, "replay_rows": _INT, "labels_until": _DATE,
        "labels_read_at": _DATE,
        "champion_golden_f1": _FLOAT, "challenger_golden_f1": _FLOAT,
        "champion_fresh_f1": _FLOAT, "challenger_fresh_f1": _FLOAT, "duration_s": _FLOAT,
        "pruned_versions": _KEYWORD, "figures": {"type": "object", "enabled": False},
    },
}
INDICES: tuple[str, ...] = tuple(MAPPINGS)


def index_template(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "index_patterns": [settings.index(name)],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": settings.index_shards, "number_of_replicas": settings.index_replicas},
            "mappings": {"dynamic": "strict", "properties": MAPPINGS[name]},
        },
        "_meta": {"managed_by": "finsent"},
    }


def ensure_indices(es: Any, settings: Settings) -> list[str]:
    """Put every index template and create missing indices; returns the indices created.

    ``es`` is a synchronous ``elasticsearch.Elasticsearch`` (thread-safe). Safe to call any number
    of times. One thread per index: each template and each new index waits for a cluster-state
    update, and the master can apply the updates that arrive together in one go, where one index
    after the other waited a round each (0.5 s to 3 s for the seven here, at every `init`, worker
    start and integration test). The first error is raised once every index has been tried.
    """
    with ThreadPoolExecutor(max_workers=len(INDICES), thread_name_prefix="ensure-index") as pool:
        created = list(pool.map(lambda name: ensure_index(es, settings, name), INDICES))
    return [settings.index(name) for name, new in zip(INDICES, created, strict=True) if new]


def update_mapping(es: Any, settings: Settings, name: str) -> None:
    """:func:`ensure_index` for a process that writes the index but may not manage it (a user whose role on
    their own cluster lacks template rights, say): a failure is a warning, and the writes say what they lack."""
    try:
        ensure_index(es, settings, name)
    except Exception as exc:  # noqa: BLE001 - Elasticsearch away, or no right to it: the writes will tell
        log.warning("could not bring the mapping of %s up to date (%s: %s); documents with fields it lacks "
                    "will be refused", settings.index(name), type(exc).__name__, exc)


def ensure_index(es: Any, settings: Settings, name: str) -> bool:
    """Put one index's template and create the index, or add new fields to the live one; True if created.
    A process that writes an index calls this at its start, so a field added by an upgrade is in the
    mapping (which is strict) before the first document that has it."""
    es.indices.put_index_template(name=settings.index(name), **index_template(settings, name))
    index = settings.index(name)
    if es.indices.exists(index=index):
        # Templates only shape new indices; add new fields to the live one too.
        es.indices.put_mapping(index=index, properties=MAPPINGS[name])
        return False
    return _create_index(es, index)


def _create_index(es: Any, index: str) -> bool:
    """Create ``index``; False when another process created it first. Any other refusal (the
    cluster's shard limit, say) is raised, not reported as created."""
    from elasticsearch import BadRequestError

    try:
        es.indices.create(index=index)
    except BadRequestError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        if isinstance(error, dict) and error.get("type") == "resource_already_exists_exception":
            return False
        raise
    return True


def topic_configs(name: str, settings: Settings) -> dict[str, str]:
    """The topic settings finsent sets itself; the rest are the broker's defaults."""
    if name == "dlq":  # kept longer than the broker's default week, so there is time to fix and replay
        return {"retention.ms": str(round(settings.dlq_retention_days * 86_400_000))}
    return {}


def ensure_topics(admin: Any, settings: Settings) -> list[str]:
    """Create missing topics with the configured partitions, and set :func:`topic_configs` on
    every topic (a changed retention reaches existing topics too); returns the topics created.

    ``admin`` is a ``kafka.KafkaAdminClient``.
    """
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    existing = set(admin.list_topics())
    configs = {settings.topic(name): topic_configs(name, settings) for name in TOPICS}
    partitions = {settings.topic(name): 1 if name in SINGLE_PARTITION_TOPICS else settings.topic_partitions
                  for name in TOPICS}
    wanted = [
        NewTopic(
            name=settings.topic(name),
            num_partitions=partitions[settings.topic(name)],
            replication_factor=settings.topic_replication,
            topic_configs=configs[settings.topic(name)],
        )
        for name in TOPICS
        if settings.topic(name) not in existing
    ]
    if wanted:
        try:
            admin.create_topics(wanted, validate_only=False)
        except TopicAlreadyExistsError:
            pass  # another process created them between our list and create
    configured = [ConfigResource(ConfigResourceType.TOPIC, topic, configs=wanted_configs)
                  for topic, wanted_configs in configs.items() if topic in existing and wanted_configs]
    if configured:
        # Incremental: sets these keys and leaves the others alone. Errors come back, not raised.
        answers = admin.alter_configs(configured)["topic"]
        failed = {topic: answer for topic, answer in answers.items() if answer != "OK"}
        if failed:
            raise RuntimeError(f"Kafka refused the topic settings: {failed}")
    _check_partitions(admin, {topic: n for topic, n in partitions.items() if topic in existing},
                      single={settings.topic(name) for name in SINGLE_PARTITION_TOPICS})
    return [t.name for t in wanted]


def _check_partitions(admin: Any, expected: dict[str, int], single: set[str]) -> None:
    """Existing topics keep their partition count (adding partitions would move tickers to other
    partitions and away from their window state). A single-partition topic (control) with more
    loses the order of its messages, so that is an error; another count than the setting is a warning."""
    if not expected:
        return
    counts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(expected))}
    for topic in sorted(single & counts.keys()):
        if counts[topic] != 1:
            raise RuntimeError(f"topic {topic} has {counts[topic]} partitions; control messages need exactly one to "
                               f"stay in order: delete the topic (no worker running) and run `finsent services init`")
    for topic, count in sorted(counts.items()):
        if count != expected[topic]:  # single-partition topics expect 1 and passed above
            log.warning("topic %s has %d partitions, FINSENT_TOPIC_PARTITIONS says %d; existing topics keep "
                        "theirs", topic, count, expected[topic])
