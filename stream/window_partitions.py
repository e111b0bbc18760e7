"""How many partitions the worker's window state uses: as many as the topics that already hold it.

The window events topic and the window table's changelog are created by the first worker, with
FINSENT_TOPIC_PARTITIONS partitions, and Kafka never changes a topic's count by itself. A worker
started later with another setting keeps the count they have: a ticker's events arrive on the
partition its key hashes to over the topic's real count, and the table writes the ticker's state to
the changelog partition the same hash gives over the table's count. With the setting instead, state
would go to partitions that do not exist, or be restored by a worker that never sees the ticker.
"""

from __future__ import annotations

import logging

from finsent import clients
from finsent.settings import Settings

log = logging.getLogger(__name__)


class WindowPartitionsMismatch(RuntimeError):
    """The window topics disagree: no count keeps every ticker's state beside its events."""


WINDOW_TABLE = "windows"  # the Faust table of the window state


def app_id(settings: Settings) -> str:
    """The worker's Faust app id, which is also its consumer group: one per topic prefix."""
    return f"{settings.topic_prefix}-stream"


def window_topic_name(settings: Settings) -> str:
    return f"{settings.topic_prefix}.stream-window-events"


def window_changelog_name(settings: Settings) -> str:
    """Faust's name for the window table's changelog: ``{app id}-{table}-changelog``."""
    return f"{app_id(settings)}-{WINDOW_TABLE}-changelog"


def choose(setting: int, counts: dict[str, int]) -> int:
    """The partition count for the window state, given the counts of the window topics that exist."""
    if not counts:
        return setting  # a first start: the worker creates both with the setting
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{topic} has {n}" for topic, n in sorted(counts.items()))
        raise WindowPartitionsMismatch(
            f"the window topics disagree ({found} partitions): stop every worker, delete both topics (the open "
            f"windows start again empty) and start the workers again")
    return next(iter(counts.values()))


def existing_counts(settings: Settings) -> dict[str, int]:
    """The partition counts of the window topics that exist on the cluster."""
    wanted = {window_topic_name(settings), window_changelog_name(settings)}
    admin = clients.kafka_admin(settings)
    try:
        existing = sorted(wanted & set(admin.list_topics()))
        if not existing:
            return {}
        # A topic being deleted may list no partitions: it is not there to keep.
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(existing) if t["partitions"]}
    finally:
        admin.close()


def window_partitions(settings: Settings) -> int:
    """The count :func:`choose` gives for this cluster. When Kafka cannot be asked (it may start after
    the worker), the setting, with a warning: the worker itself waits for Kafka."""
    from kafka.errors import KafkaError

    try:
        counts = existing_counts(settings)
    except KafkaError as exc:
        log.warning("could not read the window topics' partitions (%s: %s); using FINSENT_TOPIC_PARTITIONS=%d",
                    type(exc).__name__, exc, settings.topic_partitions)
        return settings.topic_partitions
    chosen = choose(settings.topic_partitions, counts)
    if chosen != settings.topic_partitions:
        log.warning("the window topics have %d partitions and keep them (FINSENT_TOPIC_PARTITIONS says %d): a "
                    "ticker's window state stays where its events arrive", chosen, settings.topic_partitions)
    return chosen
