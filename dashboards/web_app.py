"""The built-in live dashboard: an aiohttp app that serves a static page and the JSON API it
calls, reading Elasticsearch with the async client.

The page (``dashboards/static``) renders every piece of document text with ``textContent``;
the server adds a strict Content-Security-Policy (no inline script) as a second line of
defence. ``/health`` probes Elasticsearch; ``/metrics`` serves the injected registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dashboards import web_queries as q
from dashboards.review_mount import mount_review
from finsent import allowed_hosts
from finsent.schemas import utc_now
from finsent.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SETTINGS = web.AppKey("settings", Settings)
ES = web.AppKey("elasticsearch", object)
METRICS = web.AppKey("metrics", object)
CLOCK = web.AppKey("clock", object)
REGISTRY = web.AppKey("registry", CollectorRegistry)
REVIEW = web.AppKey("review", str)

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class DashboardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("finsent_dashboard_requests_total", "HTTP requests by route and status",
                                ["route", "status"], registry=registry)
        self.seconds = Histogram("finsent_dashboard_request_seconds", "Time to answer a request", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=registry)
        self.es_errors = Counter("finsent_dashboard_elasticsearch_errors_total",
                                 "Elasticsearch requests that failed", registry=registry)


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _observe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    metrics: DashboardMetrics = request.app[METRICS]
    route = _route_name(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        _protect(exc, route)  # an error page (503 from Elasticsearch, 404) carries them too
        raise
    except q.BadRequest as exc:
        status = 400
        response = web.json_response({"error": str(exc)}, status=400)  # it repeats the caller's input
    finally:
        metrics.requests.labels(route, str(status)).inc()
        metrics.seconds.labels(route).observe(time.perf_counter() - started)
    return _protect(response, route)


def _protect(response: web.StreamResponse, route: str) -> web.StreamResponse:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if route.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _search(request: web.Request, index: str, body: dict[str, Any]) -> dict[str, Any]:
    """Search one of our indices; a missing index reads as empty, an unreachable cluster as 503."""
    from elasticsearch import ApiError, TransportError

    settings: Settings = request.app[SETTINGS]
    try:
        response = await request.app[ES].search(index=settings.index(index), body=body,
                                                ignore_unavailable=True, allow_no_indices=True)
    except (ApiError, TransportError) as exc:
        request.app[METRICS].es_errors.inc()
        log.warning("search of %s failed: %s", settings.index(index), exc)
        raise web.HTTPServiceUnavailable(
            text=f'{{"error": "Elasticsearch is unavailable ({type(exc).__name__})"}}',
            content_type="application/json") from None
    return dict(response.body)


def _now(request: web.Request) -> datetime:
    return request.app[CLOCK]()


async def config(request: web.Request) -> web.Response:
    settings: Settings = request.app[SETTINGS]
    return web.json_response({"refresh_seconds": settings.dashboard_refresh_seconds, "ranges": list(q.RANGES),
                              "default_range": q.DEFAULT_RANGE, "review": request.app[REVIEW]})


async def tickers(request: web.Request) -> web.Response:
    _, span = q.parse_range(request.query.get("range"))
    now = _now(request)
    body = await _search(request, "docs", q.tickers_query(now - span, now))
    return web.json_response({"tickers": q.parse_tickers(body)})


async def timeline(request: web.Request) -> web.Response:
    ticker = q.parse_ticker(request.query.get("ticker"), required=True)
    name, span = q.parse_range(request.query.get("range"))
    interval, _ = q.pick_interval(span)
    now = _now(request)
    body = await _search(request, "docs", q.timeline_query(ticker, now - span, now, interval))
    points = q.parse_timeline(body)
    return web.json_response({"ticker": ticker, "range": name, "interval": interval, "points": points})


async def documents(request: web.Request) -> web.Response:
    ticker = q.parse_ticker(request.query.get("ticker"))
    limit = q.parse_limit(request.query.get("limit"))
    name, span = q.parse_range(request.query.get("range"))
    now = _now(request)
    body = await _search(request, "docs", q.documents_query(ticker, limit, now - span, now))
    return web.json_response({"ticker": ticker, "range": name, "documents": q.parse_documents(body)})


async def alerts(request: web.Request) -> web.Response:
    name, span = q.parse_range(request.query.get("range"))
    now = _now(request)
    body = await _search(request, "alerts", q.alerts_query(now - span, now))
    return web.json_response({"range": name, "alerts": q.parse_alerts(body)})


async def model(request: web.Request) -> web.Response:
    name, span = q.parse_range(request.query.get("range"))
    now = _now(request)
    champion = await _search(request, "models", q.champion_query())
    scoring = await _search(request, "docs", q.scoring_model_query(now - span, now))
    return web.json_response({"range": name, **q.parse_model(champion, scoring)})


async def drift(request: web.Request) -> web.Response:
    name, span = q.parse_range(request.query.get("range"))
    now = _now(request)
    body = await _search(request, "drift", q.drift_query(now - span, now))
    return web.json_response({"range": name, **q.parse_drift(body)})


async def health(request: web.Request) -> web.Response:
    # Cluster health, not ping(): some distributions answer HEAD / with 405.
    try:
        cluster = (await request.app[ES].cluster.health(timeout="5s")).body.get("status", "unknown")
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", said in the body
        log.warning("health: Elasticsearch unreachable: %s", exc)
        cluster = "unreachable"
    ok = cluster in ("green", "yellow")
    return web.json_response({"status": "ok" if ok else "degraded", "elasticsearch": ok, "cluster": cluster},
                             status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[REGISTRY]),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def _page(name: str) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
    return handler


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None, es: Any = None,
               clock: Callable[[], datetime] = utc_now, bind_host: str | None = None) -> web.Application:
    """The dashboard app. ``es`` (an ``AsyncElasticsearch``) is created on start-up unless given;
    the app closes only a client it created. ``bind_host`` (default ``FINSENT_DASHBOARD_HOST``) on
    loopback means requests must name this machine in their Host header (finsent.allowed_hosts: DNS rebinding);
    bound to another address it serves whatever name its users reach it by."""
    host = settings.dashboard_host if bind_host is None else bind_host
    middlewares = [_observe]
    if allowed_hosts.is_loopback(host):
        middlewares.append(allowed_hosts.middleware(
            allowed_hosts.AllowedHosts.of(settings, host),
            hint=" (or FINSENT_DASHBOARD_HOST, to serve any name beyond loopback)"))
    app = web.Application(middlewares=middlewares)
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[METRICS] = DashboardMetrics(app[REGISTRY])
    app[CLOCK] = clock
    if es is not None:
        app[ES] = es

    async def connect(app: web.Application) -> None:
        if ES not in app:
            from finsent.clients import async_elasticsearch

            app[ES] = async_elasticsearch(settings)

            async def close(_: web.Application) -> None:
                await app[ES].close()
            app.on_cleanup.append(close)

    app.on_startup.append(connect)
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/review", _page("review.html"))
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_get("/api/config", config)
    app.router.add_get("/api/tickers", tickers)
    app.router.add_get("/api/timeline", timeline)
    app.router.add_get("/api/documents", documents)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/model", model)
    app.router.add_get("/api/drift", drift)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app[REVIEW] = mount_review(app, settings, app[REGISTRY])
    return app
