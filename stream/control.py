"""Per-worker listener on the control topic.

Every worker must see every promote/rollback, so this is not part of the worker's
consumer group: each worker assigns itself the single control partition, starts at its
end (older commands were already applied by whoever loaded the champion at start), and
hands model requests to the :class:`~stream.model_holder.ModelHolder`.

A promote or rollback of a registry model is a cue, not an order: the worker loads the
registry's champion then (:func:`model_request`). Two senders on two hosts (`finsent model
promote` and a retrain) may reach the topic in the other order than they moved the champion,
and their ``issued_at`` come from two clocks, so neither order says which was last; the
champion pointer does (RELIABILITY.md, "Control messages out of order").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finsent import clients
from finsent.schemas import ControlMessage, RecordError, parse_record
from finsent.settings import Settings
from model.registry import Registry, is_model_folder

log = logging.getLogger(__name__)


def publish(settings: Settings, message: ControlMessage, timeout: float = 15.0) -> None:
    """Send one control message and wait until the broker has it (one-off senders: the CLI, the
    benchmarks; the retrain scheduler keeps a producer of its own)."""
    producer = clients.kafka_producer(settings, request_timeout_ms=10_000, max_block_ms=10_000)
    try:
        producer.send(settings.topic("control"), message.to_json()).get(timeout=timeout)
    finally:
        producer.close(timeout=5)


def model_request(message: ControlMessage, registry: Registry) -> str | None:
    """The model reference a control message asks workers to load, or None to ignore it.

    A model of this worker's ``registry`` (the message's folder lies in it, or it has the version): the registry's
    champion, whichever the message names. Every sender moves the champion before it publishes, so the champion read
    on a message is at least as new as the message, and the last message read leaves the worker on the last champion
    whatever order the messages came in. A model folder outside the registry on this host (the benchmarks, tests):
    that folder, which the champion says nothing about. Else the version, from this worker's registry (which names
    what is missing when it cannot load it)."""
    if message.action not in ("promote", "rollback"):
        return None  # "drift" is for the alert rules
    folder = message.model_path if message.model_path and is_model_folder(message.model_path) else None
    if folder is not None and Path(folder).expanduser().resolve().parent != registry.versions_dir:
        return folder
    if message.model_path and folder is None:
        # The sender's registry is mounted elsewhere, or on another host: the version names the same model.
        log.info("control: no model folder at %s on this host; loading from this worker's registry %s",
                 message.model_path, registry.root)
    try:
        if folder is None and not registry.exists(message.model_version):
            return message.model_version
        champion = registry.champion()
    except (OSError, ValueError) as exc:  # an unreadable registry: the message is all there is to go by
        log.warning("control: could not read the champion of %s (%s); loading %s as the %s says",
                    registry.root, exc, message.model_version, message.action)
        return message.model_version
    if champion is None:  # a registry without a pointer (a copy made by hand): as the message says
        return message.model_version
    if champion != message.model_version:
        log.warning("control: %s of %s (issued %s), but the registry's champion is %s: a promote or rollback "
                    "made after it, whose message came first or is still to come; loading %s",
                    message.action, message.model_version, message.issued_at.isoformat(), champion, champion)
    return champion


class ControlListener:
    def __init__(self, settings: Settings, on_request: Callable[[str, ControlMessage], None]) -> None:
        self.settings = settings
        self.on_request = on_request
        self.registry = Registry(settings.models_path)  # the workers' own (Scorer.from_settings, ScorerProcess)
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.settings.topic("control"), 0)
        self._consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                          **clients.aiokafka_common(self.settings))
        await self._consumer.start()
        self._consumer.assign([tp])
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)  # resolve the end now, so later messages are not missed
        self.ready.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            try:
                message = parse_record(ControlMessage, record.value or b"")
            except RecordError as exc:
                log.error("ignoring bad control message at offset %s: %s", record.offset, exc.reason)
                continue
            ref = await asyncio.to_thread(model_request, message, self.registry)  # file reads, off the loop
            if ref is not None:
                log.info("control: %s → loading %s", message.action, ref)
                self.on_request(ref, message)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        if self._consumer is not None:
            await self._consumer.stop()
