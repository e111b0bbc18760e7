"""`finsent services up|down|status`: the embedded Kafka and Elasticsearch, health-checked."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

from finsent.services.elasticsearch_server import ElasticsearchServer
from finsent.services.kafka_server import KafkaServer
from finsent.services.process import ServiceError, port_in_use, port_taken
from finsent.settings import Settings


@dataclass
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str
    folder: str  # config, data and logs


def servers(settings: Settings) -> list[KafkaServer | ElasticsearchServer]:
    return [KafkaServer(settings), ElasticsearchServer(settings)]


def up(settings: Settings, *, bootstrap: bool = True, echo: Callable[[str], None] = print) -> list[ServiceStatus]:
    """Start whatever is not running (idempotent), wait for health, create topics and indices."""
    kafka, es = servers(settings)
    ports = {
        kafka: ((settings.kafka_port, "FINSENT_KAFKA_PORT"),
                (settings.kafka_controller_port, "FINSENT_KAFKA_CONTROLLER_PORT")),
        es: ((settings.elasticsearch_port, "FINSENT_ELASTICSEARCH_PORT"),
             (settings.elasticsearch_transport_port, "FINSENT_ELASTICSEARCH_TRANSPORT_PORT")),
    }
    running = {server: server.process() for server in (kafka, es)}
    # Every port checked before anything starts: a taken Elasticsearch port must not leave a new Kafka behind.
    taken = [port_taken(port, server.name, f"stop it or set {setting}")
             for server, process in running.items() if process is None for port, setting in ports[server]
             if port_in_use(port)]
    if taken:
        raise ServiceError("; ".join(taken))
    started = []  # (server, process, whether this call started it)
    for server in (kafka, es):
        if (process := running[server]) is not None:
            # Perhaps still starting (an earlier `up` interrupted): wait for it like a new one.
            echo(f"{server.name}: already running (pid {process.pid})")
            started.append((server, process, False))
            continue
        fetch = "" if server.fetched() else f" (fetching it from Maven Central into {settings.cache_dir} first, once)"
        echo(f"{server.name}: starting{fetch}")
        started.append((server, server.start(), True))
    deadline = time.monotonic() + settings.services_start_timeout
    for server, proc, ours in started:
        try:
            server.wait_healthy(proc, timeout=max(5.0, deadline - time.monotonic()))
        except ServiceError:
            if ours:
                server.stop()
            raise
        echo(f"{server.name}: healthy (pid {proc.pid})")
    if bootstrap:
        init(settings, echo=echo)
    return status(settings)


def init(settings: Settings, *, echo: Callable[[str], None] = print) -> None:
    """Create the topics and index templates/indices of DESIGN.md; idempotent."""
    from finsent import clients, topology

    admin = clients.kafka_admin(settings)
    try:
        created = topology.ensure_topics(admin, settings)
    finally:
        admin.close()
    echo(f"kafka topics: {len(created)} created, {len(topology.TOPICS) - len(created)} already there")
    with clients.elasticsearch(settings) as es:
        created = topology.ensure_indices(es, settings)
    echo(f"elasticsearch indices: {len(created)} created, {len(topology.INDICES) - len(created)} already there")


def remove_prefixed(settings: Settings, *, echo: Callable[[str], None] = print) -> None:
    """Delete every topic and index (with its templates) under the settings' prefixes: what
    ``init``, the stream worker and Faust created for them. For short-lived prefixes (tests,
    benchmarks): a broker that keeps every such topic holds their partitions in its heap, and a
    single node with 512 MB ran out of it at about 18,000 partitions. Best effort: what could not
    be deleted is said, not raised."""
    from finsent import clients

    try:
        with clients.elasticsearch(settings) as es:
            es.options(ignore_status=404).indices.delete(index=f"{settings.index_prefix}-*")
            es.options(ignore_status=404).indices.delete_index_template(name=f"{settings.index_prefix}-*")
    except Exception as exc:  # noqa: BLE001 - cleanup goes on with the topics
        echo(f"could not delete indices {settings.index_prefix}-*: {exc}")
    prefix = settings.topic_prefix
    try:
        admin = clients.kafka_admin(settings)
        try:
            ours = [t for t in admin.list_topics() if t.startswith((prefix + ".", prefix + "-"))]
            if ours:
                admin.delete_topics(ours)
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001
        echo(f"could not delete topics {prefix}.*: {exc}")


def down(settings: Settings, *, echo: Callable[[str], None] = print) -> None:
    """Stop exactly the processes ``up`` started (from their pid files)."""
    for server in reversed(servers(settings)):
        echo(f"{server.name}: {'stopped' if server.stop() else 'not running'}")


def status(settings: Settings) -> list[ServiceStatus]:
    result = []
    kafka, es = servers(settings)
    for server, address in ((kafka, kafka.bootstrap), (es, es.url)):
        proc = server.process()
        healthy, detail = False, "not running"
        if proc is not None:
            try:
                health = server.health()
                healthy = bool(health)
                detail = health if isinstance(health, str) else ("metadata ok" if health else "not answering")
            except Exception as exc:  # noqa: BLE001 - status reports, never raises
                detail = f"unhealthy: {exc}"
        result.append(ServiceStatus(server.name, address, proc.pid if proc else None, proc is not None, healthy,
                                    detail, str(server.root)))
    return result


def status_json(settings: Settings) -> dict:
    entries = status(settings)
    return {
        "kafka_bootstrap": entries[0].address,
        "elasticsearch_url": entries[1].address,
        "healthy": all(e.healthy for e in entries),
        "services": {e.name: asdict(e) for e in entries},
    }
