"""Per-worker listener on the control topic (and :func:`publish`, which one-off senders use to write to it).

Every worker must see every promote/rollback, so this is not part of the worker's
consumer group: each worker assigns itself the single control partition, starts at its
end (older commands were already applied by whoever loaded the champion at start), and
hands model requests to the :class:`~stream.model_holder.ModelHolder`.

Two senders that each move the champion (``finsent model promote`` on one host, a retrain on another) may have
their messages written in the other order than their moves. A message carries the registry's number of its move
(``sequence``, with ``registry_id``), and :class:`MoveOrder` ignores a promote or rollback that is not newer than the
last one this worker loaded or asked for from that registry; the worker starts from the number of the champion it
loads at start. A message without a number (an older sender, a model outside the registry) is applied as it comes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class MoveOrder:
    """The newest champion move of each registry (by ``registry_id``) this worker has loaded (``loaded``) and asked
    for (``asked``). Sequence numbers of two registries are unrelated, so each is compared only with its own."""

    loaded: dict[str, int] = field(default_factory=dict)
    asked: dict[str, int] = field(default_factory=dict)

    def start_at(self, registry_id: str | None, sequence: int) -> None:
        """The champion loaded at start: the move that made it champion (none before the registry's first move)."""
        if registry_id is not None and sequence:
            self.loaded[registry_id] = max(sequence, self.loaded.get(registry_id, 0))

    def newest(self, registry_id: str) -> int:
        return max(self.loaded.get(registry_id, 0), self.asked.get(registry_id, 0))

    def admit(self, message: ControlMessage) -> bool:
        """Whether to load what the promote or rollback ``message`` names: a message without a sequence always, one
        with a sequence only when it is newer than any move of its registry loaded or asked for; an admitted one is
        then the newest asked for."""
        if message.sequence is None or message.registry_id is None:
            return True
        newest = self.newest(message.registry_id)
        if message.sequence <= newest:
            log.info("control: ignoring %s of %s: move %d of registry %s is not newer than move %d, which this worker "
                     "has loaded or asked for (the broker delivered it late)", message.action, message.model_version,
                     message.sequence, message.registry_id, newest)
            return False
        self.asked[message.registry_id] = message.sequence
        return True

    def done(self, message: ControlMessage, loaded: bool) -> None:
        """The load ``message`` asked for ended: a model that was not swapped in (its load failed, or a newer
        request superseded it) may be asked for again (the same message sent again, `finsent model promote` of the
        champion): unless a newer move was asked for since, a message need only be newer than the newest loaded."""
        if message.sequence is None or message.registry_id is None:
            return
        if loaded:
            self.loaded[message.registry_id] = max(message.sequence, self.loaded.get(message.registry_id, 0))
        elif self.asked.get(message.registry_id) == message.sequence:
            del self.asked[message.registry_id]


class ControlListener:
    def __init__(self, settings: Settings, on_request: Callable[[str, ControlMessage], None],
                 order: MoveOrder | None = None) -> None:
        self.settings = settings
        self.on_request = on_request
        self.order = order if order is not None else MoveOrder()
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
            self.handle(record.value, record.offset)

    def handle(self, value: bytes | None, offset: int) -> None:
        """One record of the control topic: a model request to the worker, or nothing."""
        try:
            message = parse_record(ControlMessage, value or b"", ignore_unknown=True)
        except RecordError as exc:
            log.error("ignoring bad control message at offset %s: %s", offset, exc.reason)
            return
        ref = model_request(message)
        if ref is not None and self.order.admit(message):
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
