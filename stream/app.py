"""The Faust app of the stream worker.

Two agents:

* ``score-raw`` takes batches from ``<prefix>.raw`` (``noack_take``: nothing is acked by
  Faust itself), scores each with :class:`~stream.pipeline.RawBatchPipeline`, delivers
  it (index, produce) while the next one is scored (:mod:`stream.lookahead`), and only
  then acks the batch's events, batch after batch in order. Faust commits acked offsets
  only (contiguously, every ``worker_commit_interval`` seconds, on rebalance and on
  shutdown), so an offset is never committed before Elasticsearch acknowledged its
  document: at-least-once delivery, and with ``_id`` = document id, exactly one document
  per record in the index. (``take()``
  would not do: it acks the previous batch in a ``finally``, also when processing raised
  or the task was cancelled mid-batch.)
* ``windows`` consumes per-ticker window events from an internal topic keyed by ticker
  (one event per ticker of a document, so every ticker's state lives in exactly one
  partition, whichever partition the document came through), keeps the windows in a
  Faust table with a changelog (restored on restart), publishes changed windows and acks a
  batch only once its changelog records are on the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from finsent import allowed_hosts, clients
from finsent.dead_letters import replayed_at
from finsent.schemas import Aggregate, DeadLetter, ScoredDocument
from finsent.settings import Settings
from stream.aggregator import WindowAggregator
from stream.changelog_confirm import ChangelogConfirmations
from stream.model_holder import ScorerLoader
from stream.lookahead import Lookahead
from stream.partition_watch import PartitionWatch
from stream.pipeline import RawBatchPipeline, RawRecord, ScoredBatch
from stream.runtime import WorkerRuntime
from stream.validation import Origin, dead_letter, letter_room
from stream.window_partitions import WINDOW_TABLE, app_id, window_topic_name
from stream.windows import WindowEvent

log = logging.getLogger(__name__)


class _BytesKeyed(MutableMapping[str, Any]):
    """The Faust table with ``str`` keys (the table stores raw bytes keys, as its changelog does)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> Any:
        return self.table[key.encode()]

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key.encode(), default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.table[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode()]

    def __iter__(self) -> Iterator[str]:
        return (k.decode() for k in self.table)

    def __len__(self) -> int:
        return len(self.table)


def _broker_credentials(settings: Settings) -> Any:
    import faust

    if settings.kafka_sasl_mechanism:
        ssl_context = None
        if settings.kafka_security_protocol == "SASL_SSL":
            from aiokafka.helpers import create_ssl_context

            ssl_context = create_ssl_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile
                                             else None)
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=password,
                                     ssl_context=ssl_context, mechanism=settings.kafka_sasl_mechanism)
    if settings.kafka_security_protocol == "SSL":
        from aiokafka.helpers import create_ssl_context

        return faust.SSLCredentials(create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None))
    return None


def _worker_app_class() -> type:
    import faust

    from stream.gapless_consumer import GaplessConsumer

    class _WorkerApp(faust.App):
        """Starts the worker runtime (model, sink, control listener) before anything consumes.

        ``on_first_start`` runs before the app's children (consumer, agents, tables, web
        server) start, so the agents iterate their streams from the first record. With the
        model loaded in an ``app.task`` (run only after the first assignment and table
        recovery) the agents waited before their first ``async for`` while the fetcher
        already delivered; a replacement worker after a kill -9 then stalled with part of
        the backlog unconsumed and a few records tracked but never handed to the agent
        (RELIABILITY.md, "Liveness and exactness of the stream worker").

        Its consumer is :class:`~stream.gapless_consumer.GaplessConsumer` on the raw and
        window-event topics: no record of theirs is skipped on its way to the agents. Its web
        driver is :class:`~stream.guarded_web.GuardedWeb`: the header deadline and the per-client
        connection cap of finsent's other servers.
        """

        async def on_first_start(self) -> None:
            await super().on_first_start()
            await self.finsent_runtime.start()

        def on_rebalance_end(self) -> None:
            super().on_rebalance_end()  # called once recovery has sought and resumed the partitions
            self.finsent_runtime.on_rebalance_end(self.consumer.assignment())

        def _new_transport(self) -> Any:
            transport = super()._new_transport()
            transport.Consumer = GaplessConsumer  # see stream.contiguity
            return transport

        def _new_consumer(self) -> Any:
            consumer = super()._new_consumer()
            consumer.guarded_topics = self.finsent_gapless_topics
            consumer.on_rewind = lambda topic: self.finsent_runtime.metrics.gap_rewinds.labels(topic).inc()
            return consumer

        def _new_web(self) -> Any:
            from finsent.http_guard import GuardMetrics
            from stream.guarded_web import GuardedWeb

            runtime = self.finsent_runtime  # the header deadline and connection cap (see stream.guarded_web)
            return GuardedWeb(self, runtime.settings, metrics=GuardMetrics(runtime.metrics.registry, "worker"))

    return _WorkerApp


def _key_partitioned_table_class() -> type:
    import faust
    from aiokafka.partitioner import murmur2

    class KeyPartitionedTable(faust.Table):
        """Each changelog record goes to the partition Kafka's default partitioner gives its key
        (murmur2), where that ticker's window events are. Computed here: Faust's
        ``use_partitioner`` asks the producer's cached metadata, which lost the changelog topic
        after a broker restart (every table write then failed with a TypeError for good).

        Every changelog send is tracked until :meth:`changelog_confirmed` sees it on the broker
        (see :mod:`stream.changelog_confirm`)."""

        def partition_for_key(self, key: Any) -> int:
            return (murmur2(key) & 0x7FFFFFFF) % self.partitions

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.unconfirmed = ChangelogConfirmations()

        def send_changelog(self, partition: Any, key: Any, value: Any, key_serializer: Any = None,
                           value_serializer: Any = None) -> Any:
            args = (partition, key, value, key_serializer, value_serializer)
            future = super().send_changelog(*args)
            self.unconfirmed.track(args, future)
            return future

        async def changelog_confirmed(self) -> None:
            await self.unconfirmed.confirm(lambda args: self.send_changelog(*args))

    return KeyPartitionedTable


# What a raw document gains on its way to the scored topic: sentiment, times, model version, fields written
# out as null (a few hundred bytes; a margin for the rest).
_SCORED_GROWTH = 4096


def create_app(settings: Settings, scorer_loader: ScorerLoader | None = None, *, model_ref: str | None = None,
               registry: CollectorRegistry | None = None, web_port: int | None = None,
               window_partitions: int | None = None) -> Any:
    """Build the worker's Faust app (nothing connects until the worker starts it). ``window_partitions``:
    the count of the window topics that exist (stream.window_partitions); by default the setting."""
    registry = registry if registry is not None else CollectorRegistry()
    runtime = WorkerRuntime(settings, scorer_loader, model_ref or settings.worker_model, registry)
    datadir = (settings.state_dir / "stream" / settings.topic_prefix).resolve()
    app = _worker_app_class()(
        app_id(settings),
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="memory://",  # tables are rebuilt from their changelog topics at start
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_commit_interval=settings.worker_commit_interval,
        broker_session_timeout=settings.worker_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.worker_session_timeout / 3),  # Faust's 3 s, or 3 per session
        consumer_auto_offset_reset="earliest",
        consumer_metadata_max_age_ms=clients.METADATA_MAX_AGE_MS,  # see there
        producer_acks=-1,
        web_port=web_port or settings.worker_web_port,
        web_host="127.0.0.1",
        web_bind=settings.metrics_host,  # Faust binds 0.0.0.0 unless told
        # /metrics and /health answer only this machine's names in the Host header (DNS rebinding): Faust hands
        # these options to its aiohttp Application.
        web_application_options={"middlewares": [allowed_hosts.middleware(
            allowed_hosts.AllowedHosts.of(settings, settings.metrics_host))]},
        # Faust would serve every table's state (/table/) and the cluster's worker URLs (/router/) without
        # authentication beside /metrics; finsent routes no request to another worker.
        web_tables_enabled=False,
        web_router_enabled=False,
        autodiscover=False,
        table_standby_replicas=0,
        TableManager="stream.recovery_order:OrderedTableManager",  # seek before resuming (see there)
    )
    app.finsent_runtime = runtime

    raw_topic = app.topic(settings.topic("raw"))
    scored_topic = app.topic(settings.topic("scored"))
    dlq_topic = app.topic(settings.topic("dlq"))
    aggregates_topic = app.topic(settings.topic("aggregates"))
    window_partitions = window_partitions or settings.topic_partitions
    window_topic = app.topic(window_topic_name(settings), internal=True, partitions=window_partitions)
    app.finsent_gapless_topics = frozenset({raw_topic.get_topic_name(), window_topic.get_topic_name()})
    window_table = app.tables.add(_key_partitioned_table_class()(
        app, name=WINDOW_TABLE, default=None, partitions=window_partitions,
        key_type=bytes, beacon=app.tables.beacon))  # bytes keys: raw serializer; values: JSON

    async def send_dead_letter(key: bytes | None, letter: DeadLetter):
        return await dlq_topic.send(key=key, value=letter.to_json())

    async def send_scored(key: bytes | None, doc: ScoredDocument):
        return await scored_topic.send(key=key, value=doc.to_json())

    async def send_window_event(event: WindowEvent):
        return await window_topic.send(key=event.ticker.encode(), value=orjson.dumps(event.to_json()))

    async def send_aggregate(agg: Aggregate):
        return await aggregates_topic.send(key=agg.ticker.encode(), value=agg.to_json())

    # The producer refuses larger messages, every time they are sent: letters are cut to fit, and documents
    # that do not fit are dead-lettered (stream.pipeline), or the partition would be held for ever.
    max_message_bytes = app.conf.producer_max_request_size
    if settings.max_text_bytes + _SCORED_GROWTH > max_message_bytes:
        log.warning("FINSENT_MAX_TEXT_BYTES=%d leaves no room in the producer's largest message (%d bytes) for a "
                    "document's sentiment: documents near it go to the DLQ (stage produce)",
                    settings.max_text_bytes, max_message_bytes)
    pipeline = RawBatchPipeline(settings, runtime.holder, runtime.sink, runtime.metrics,
                                send_dead_letter=send_dead_letter, send_scored=send_scored,
                                send_window_event=send_window_event, max_message_bytes=max_message_bytes)
    aggregator = WindowAggregator(settings, runtime.sink, runtime.metrics, send_aggregate=send_aggregate)

    # The agents iterate their streams at once: the runtime is ready before they start
    # (_WorkerApp.on_first_start), never wait for it inside an agent (see _WorkerApp).
    @app.agent(raw_topic, name="score-raw", concurrency=1)
    async def score_raw(stream):
        async def deliver(batch: ScoredBatch, events: list[Any]) -> None:
            await runtime.until_done("raw batch delivery", lambda: pipeline.deliver(batch))
            for event in events:
                await stream.ack(event)

        lookahead = Lookahead(deliver)  # scores the next batch while this one is delivered (see there)
        try:
            async for events in stream.noack_take(settings.worker_batch_size, within=settings.worker_batch_within):
                records = [RawRecord(e.key, e.value, Origin(e.message.topic, e.message.partition, e.message.offset),
                                     replayed_at(e.message.headers)) for e in events]
                await lookahead.submit(runtime.until_done("raw batch scoring", lambda r=records: pipeline.score(r)),
                                       events)
            await lookahead.join()
        finally:
            await lookahead.cancel()

    store = _BytesKeyed(window_table)

    @app.agent(window_topic, name="windows", concurrency=1)
    async def windows(stream):
        async for events in stream.noack_take(settings.worker_batch_size * 4, within=settings.worker_batch_within):
            parsed: list[WindowEvent] = []
            for e in events:
                try:
                    parsed.append(WindowEvent.from_json(orjson.loads(e.value)))
                except (ValueError, KeyError, TypeError) as exc:
                    origin = Origin(e.message.topic, e.message.partition, e.message.offset)
                    key, room = letter_room(e.key, max_message_bytes)
                    letter = dead_letter("windows", f"bad window event: {exc}", e.value, origin, max_bytes=room)

                    async def send(key=key, letter=letter):  # a broker error holds the batch, as elsewhere
                        await (await send_dead_letter(key, letter))

                    await runtime.until_done("window dead letter", send)
                    runtime.metrics.dead_letters.labels("windows").inc()
            await runtime.until_done("window batch", lambda parsed=parsed: aggregator.process(store, parsed))
            # The new window state on the broker before the offsets can be committed.
            await runtime.until_done("window state", window_table.changelog_confirmed)
            for event in events:
                await stream.ack(event)

    watch = PartitionWatch(app, runtime, raw_topic.get_topic_name(), window_topic.get_topic_name())

    @app.timer(interval=min(5.0, settings.worker_stall_after / 4))
    async def watch_for_stall():
        await watch.tick()  # lag, stalls and their rewinds; never raises (see there)

    @app.on_before_shutdown.connect
    async def stop_runtime(app: Any, **kwargs: Any) -> None:
        await runtime.stop()

    @app.page("/metrics")
    async def metrics_page(web, request):
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health_page(web, request):
        ok, checks = runtime.health()
        if runtime.ready.is_set():
            checks["elasticsearch"] = checks["elasticsearch"] and await runtime.sink.ping()
            ok = ok and checks["elasticsearch"]
        checks["status"] = "ok" if ok else "unhealthy"
        return web.json(checks, status=200 if ok else 503)

    return app
