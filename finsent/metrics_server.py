"""The /metrics server of ingest, the alert engine and the scheduler: prometheus_client's own WSGI app (the text
its ``start_http_server`` serves) behind the Host check of :mod:`finsent.allowed_hosts`, which that function has no
hook for; served, as there, by a threading WSGI server in a daemon thread."""

from __future__ import annotations

import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from finsent import allowed_hosts
from finsent.settings import Settings


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """A line on stderr for every scrape is noise (prometheus_client's handler is silent too)."""


def serve_metrics(registry: CollectorRegistry, port: int, settings: Settings) -> WSGIServer:
    """Serve ``registry`` on ``FINSENT_METRICS_HOST:port`` (0: a free port) until the process exits; OSError when
    the address cannot be bound. The server is returned for its port and for tests to shut it down."""
    host = settings.metrics_host
    family, *_, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})  # IPv6 binds too
    app = allowed_hosts.wsgi(make_wsgi_app(registry), allowed_hosts.AllowedHosts.of(settings, host))
    server = make_server(sockaddr[0], port, app, server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name=f"metrics-{server.server_port}", daemon=True).start()
    return server
