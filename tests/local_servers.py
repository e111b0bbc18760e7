"""The local Kafka and Elasticsearch of one test run: `start` brings up the ones not running and returns them,
`stop` stops those again, so a run never stops servers it found running (a `make up`, another run)."""

from __future__ import annotations

from finsent.services import manager
from finsent.settings import Settings


def start(settings: Settings) -> list:
    not_running = [server for server in manager.servers(settings) if server.process() is None]
    try:
        manager.up(settings, echo=lambda m: print(f"[services] {m}"))
    except BaseException:
        stop(not_running)  # one server up and the other refused: leave nothing behind
        raise
    return not_running


def stop(servers: list) -> None:
    for server in servers:
        print(f"[services] {server.name}: {'stopped' if server.stop() else 'not running'}")
