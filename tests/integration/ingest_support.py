"""Helpers for the ingest integration tests: a real local HTTP server standing in for news
sites, Reddit and StockTwits, and a reader of what reached the real Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from finsent import clients
from finsent.schemas import RawDocument, parse_record
from finsent.settings import Settings


class FakeSite:
    """An aiohttp server on 127.0.0.1 serving canned responses; records each request."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[web.Request], web.Response]] = {}
        self.requests: list[web.Request] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    def route(self, path: str, handler: Callable[[web.Request], web.Response]) -> None:
        self.routes[path] = handler

    def serve(self, path: str, body: bytes | str, content_type: str = "application/json",
              status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.route(path, lambda _: web.Response(body=data, status=status, content_type=content_type,
                                                headers=headers))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        handler = self.routes.get(request.path)
        return handler(request) if handler else web.Response(status=404)

    async def __aenter__(self) -> FakeSite:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def consume_raw(settings: Settings, expected: int, *, timeout: float = 60.0, settle: float = 2.0
                ) -> list[tuple[bytes, RawDocument]]:
    """(key, document) of every message in ``<prefix>.raw``: waits for ``expected`` of them,
    then ``settle`` seconds more so that an extra (duplicate) message would be seen too."""
    consumer = clients.kafka_consumer(settings, settings.topic("raw"), group_id=None)
    records: list[tuple[bytes, RawDocument]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [(r.key, parse_record(RawDocument, r.value)) for r in batch]
            if len(records) >= expected:
                break
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [(r.key, parse_record(RawDocument, r.value)) for r in batch]
    finally:
        consumer.close()
    return records
