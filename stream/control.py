"""Per-worker listener on the control topic.

Every worker must see every promote/rollback, so this is not part of the worker's
consumer group: each worker assigns itself the single control partition, starts at its
end (older commands were already applied by whoever loaded the champion at start), and
hands model requests to the :class:`~stream.model_holder.ModelHolder`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from finsent import clients
from finsent.schemas import ControlMessage, RecordError, parse_record
from finsent.settings import Settings
from model.registry import is_model_folder

log = logging.getLogger(__name__)


def publish(settings: Settings, message: ControlMessage, timeout: float = 15.0) -> None:
    """Send one control message and wait until the broker has it (one-off senders: the CLI, the
    benchmarks; the retrain scheduler keeps a producer of its own)."""
    producer = clients.kafka_producer(settings, request_timeout_ms=10_000, max_block_ms=10_000)
    try:
        producer.send(settings.topic("control"), message.to_json()).get(timeout=timeout)
    finally:
        producer.close(timeout=5)


def model_request(message: ControlMessage) -> str | None:
    """The model reference a control message asks workers to load, or None to ignore it: the sender's folder
    when this host has it (it may lie outside the registry), else the version, from this worker's registry."""
    if message.action not in ("promote", "rollback"):
        return None  # "drift" is for the alert rules
    if message.model_path and not is_model_folder(message.model_path):
        # The sender's registry is mounted elsewhere, or on another host: the version names the same model.
        log.info("control: no model folder at %s on this host; loading version %s from this worker's registry",
                 message.model_path, message.model_version)
        return message.model_version
    return message.model_path or message.model_version


class ControlListener:
    def __init__(self, settings: Settings, on_request: Callable[[str, ControlMessage], None]) -> None:
        self.settings = settings
        self.on_request = on_request
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
                message = parse_record(ControlMessage, record.value or b"", ignore_unknown=True)
            except RecordError as exc:
                log.error("ignoring bad control message at offset %s: %s", record.offset, exc.reason)
                continue
            ref = model_request(message)
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
