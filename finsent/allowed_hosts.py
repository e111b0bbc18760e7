"""Which names a server answers in a request's Host header: the defence against DNS rebinding.

A web page on another site can point its own name at 127.0.0.1 (or at this machine's address) and then read what
a server here answers, as its own origin; the browser sends that name as Host. The servers without a login (every
/metrics, /health and /healthz, the dashboard on loopback) therefore answer only the names this machine goes by:

- any IP address (a page cannot make a browser send one for its own origin; Prometheus scrapes by IP:port),
- ``localhost``, the address the server binds and this machine's host name,
- ``FINSENT_ALLOWED_HOSTS`` (the names Prometheus scrapes by, docker-compose's service names).

Other names get 421 Misdirected Request, as the dashboard has answered since its check; a request without Host
(HTTP/1.0, never a browser's) passes. This module holds the rule, an aiohttp middleware and a WSGI wrapper.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from aiohttp import web

from finsent.settings import Settings

MISDIRECTED = 421
_NOT_IN_A_HOST = set("@/\\?# \t")


def is_loopback(host: str) -> bool:
    """Whether a bind address (or a Host name) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name a Host header carries, lower case, without port or final dot (``[::1]:80`` → ``::1``); None for a
    header that is no host[:port]."""
    if _NOT_IN_A_HOST & set(header):
        return None
    if header.startswith("["):
        name, bracket, port = header[1:].partition("]")
        ok = bracket and (not port or port[0] == ":" and port[1:].isdigit())
        return name.lower() if ok else None
    name, colon, port = header.partition(":")
    if colon and not port.isdigit() or not name:
        return None
    return name.lower().rstrip(".") or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The names one server answers (see the module's docstring)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(name.lower().rstrip(".") for name in names if name)

    @classmethod
    def of(cls, settings: Settings, bind_host: str) -> AllowedHosts:
        return cls(("localhost", bind_host.strip("[]"), socket.gethostname(), *settings.allowed_host_names))

    def allows(self, header: str | None) -> bool:
        if not header:
            return True
        name = host_name(header)
        return name is not None and (name in self.names or _is_ip(name))

    def refusal(self, header: str) -> str:
        return (f"Host {header[:100]!r} is not a name of this server: a page that points its own name here (DNS "
                "rebinding) must not read it; add the name to FINSENT_ALLOWED_HOSTS")


def middleware(allowed: AllowedHosts, *, paths: Collection[str] | None = None, hint: str = "") -> Any:
    """An aiohttp middleware answering 421 (JSON) to a Host that ``allowed`` refuses, on ``paths`` (default: all)."""

    @web.middleware
    async def host_check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        header = request.headers.get("Host")
        if (paths is None or request.path in paths) and not allowed.allows(header):
            return web.json_response({"error": allowed.refusal(header or "") + hint}, status=MISDIRECTED)
        return await handler(request)

    return host_check


def wsgi(app: Callable[..., Any], allowed: AllowedHosts) -> Callable[..., Any]:
    """``app`` behind the same check: 421 (plain text) to a Host that ``allowed`` refuses."""

    def host_check(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        header = environ.get("HTTP_HOST")
        if allowed.allows(header):
            return app(environ, start_response)
        body = (allowed.refusal(header or "") + "\n").encode()
        start_response("421 Misdirected Request", [("Content-Type", "text/plain; charset=utf-8"),
                                                   ("Content-Length", str(len(body)))])
        return [body]

    return host_check
