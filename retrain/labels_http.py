"""The labels HTTP API, an aiohttp application other processes can mount (the dashboard does).

- ``POST /labels`` — one label object, a list of them, or ``{"labels": [...]}``; each with
  ``text``, ``label`` and optionally ``doc_id``, ``annotator``, ``source`` (default ``api``; the
  review page sends ``review``), ``labeled_at`` (with a time zone, at most 5 minutes ahead of this
  server's clock). 202 with the label ids once Kafka has them;
  400 naming the bad fields (the first ``MAX_SHOWN`` problems, and their count); 401 without a bearer
  token; 403 for an annotator the token may not label as (retrain.label_tokens); 413 over
  ``FINSENT_LABEL_MAX_BYTES`` or ``FINSENT_LABEL_MAX_ITEMS`` labels; 408 (and the connection closed) when
  the body is not all there ``FINSENT_HTTP_BODY_TIMEOUT`` seconds after it was first read.
- ``GET /review?limit=N`` — the review queue as JSON (``{"items": [...]}``).

Both need ``Authorization: Bearer <token>``, the shared ``FINSENT_LABEL_TOKEN`` or an annotator's own from
``FINSENT_LABEL_TOKENS_FILE`` (compared in constant time); above ``FINSENT_LABEL_RATE_LIMIT`` requests per second
per client (finsent.rate_limit) the answer is 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from finsent import allowed_hosts, rate_limit
from finsent.http_requests import BodyTooSlow, read_limited
from finsent.rate_limit import TokenBucketLimiter
from finsent.schemas import LabelRecord
from finsent.settings import Settings
from finsent.stop_signals import in_daemon_thread
from retrain.label_intake import LabelInputError, LabelPublisher, build_records
from retrain.label_tokens import Caller, LabelAuth

log = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
PUBLISHER_KEY = web.AppKey("publisher", LabelPublisher)
ES_KEY = web.AppKey("es", object)
METRIC_KEY = web.AppKey("requests", Counter)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
AUTH_KEY = web.AppKey("auth", LabelAuth)
CALLER_KEY = web.RequestKey("caller", Caller)
_PUBLIC = {"/metrics"}  # Prometheus scrapes without the token; it shows counts, never labels
MAX_SHOWN = 20  # problems an answer lists; it counts them all
MAX_PROBLEM_CHARS = 500  # one label with thousands of unknown fields has a long problem


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _endpoint(request: web.Request) -> str:
    """The metric label of a request: its route, never the path the caller typed (every new path
    would be a new series, and anyone may send one without a token)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    # Only the routes this app owns are public; a mounted sub-app sees its own relative path.
    if request.match_info.route.resource is not None and request.match_info.route.resource.canonical in _PUBLIC:
        return await handler(request)
    caller = request.app[AUTH_KEY].caller(request)
    if caller is None:
        request.app[METRIC_KEY].labels(endpoint=_endpoint(request), status="401").inc()
        return _json(401, {"error": "missing or wrong bearer token"})
    request[CALLER_KEY] = caller
    return await handler(request)


class _Refused(Exception):
    """A request refused whole: the answer's status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.status, self.body = status, body


def read_labels(body: bytes, max_items: int, annotator: str = "api") -> list[LabelRecord]:
    """The body's labels, validated, ``annotator`` where one names none; raises :class:`_Refused`. CPU-bound on
    a full body, so it runs in a thread: the event loop (the dashboard's, where it is mounted) keeps answering."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, {"error": f"body is not valid JSON: {exc}"}) from None
    items = data.get("labels") if isinstance(data, dict) and "labels" in data else data
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list) or not items:
        raise _Refused(400, {"error": "expected a label object, a non-empty list, or {\"labels\": [...]}"})
    if len(items) > max_items:  # counted before any is validated: the cost is in the validation
        raise _Refused(413, {"error": f"{len(items)} labels in one request, over the limit of {max_items} "
                                      "(FINSENT_LABEL_MAX_ITEMS): send them in several requests"})
    try:
        return build_records(items, where="labels", annotator=annotator, source="api")
    except LabelInputError as exc:
        shown = [problem[:MAX_PROBLEM_CHARS] for problem in exc.problems[:MAX_SHOWN]]
        raise _Refused(400, {"error": "invalid labels", "problems": shown,
                             "problem_count": len(exc.problems)}) from None


async def post_labels(request: web.Request) -> web.Response:
    app, settings = request.app, request.app[SETTINGS_KEY]
    requests = app[METRIC_KEY]
    try:
        body = await read_limited(request, settings.label_max_bytes, settings.http_body_timeout)
    except BodyTooSlow as exc:
        requests.labels(endpoint="/labels", status="408").inc()
        return exc.answer()
    if body is None:
        requests.labels(endpoint="/labels", status="413").inc()
        return _json(413, {"error": f"body is over the limit of {settings.label_max_bytes} bytes"})
    loop = asyncio.get_running_loop()
    caller = request[CALLER_KEY]
    try:
        records = await loop.run_in_executor(None, read_labels, body, settings.label_max_items,
                                             caller.annotator or "api")
    except _Refused as refused:
        requests.labels(endpoint="/labels", status=str(refused.status)).inc()
        return _json(refused.status, refused.body)
    if refusal := app[AUTH_KEY].refusal(caller, records):
        requests.labels(endpoint="/labels", status="403").inc()
        return _json(403, {"error": refusal})
    try:
        ids = await loop.run_in_executor(None, app[PUBLISHER_KEY].publish, records)
    except Exception as exc:  # Kafka unavailable: the client must retry, nothing was accepted
        log.error("could not publish %d label(s): %s", len(records), exc)
        requests.labels(endpoint="/labels", status="503").inc()
        return _json(503, {"error": "labels topic unavailable, retry later"})
    requests.labels(endpoint="/labels", status="202").inc()
    return _json(202, {"accepted": len(ids), "ids": ids})


async def get_review(request: web.Request) -> web.Response:
    from retrain.review import review_queue

    raw = request.query.get("limit", "20")
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= 500:  # not isdigit(): it takes "²"
        request.app[METRIC_KEY].labels(endpoint="/review", status="400").inc()
        return _json(400, {"error": "limit must be an integer from 1 to 500"})
    settings, es = request.app[SETTINGS_KEY], request.app[ES_KEY]
    try:
        items = await asyncio.get_running_loop().run_in_executor(
            None, lambda: review_queue(es, settings, limit=int(raw)))
    except Exception as exc:  # noqa: BLE001 - Elasticsearch away: the caller may retry
        log.error("could not build the review queue: %s", exc)
        request.app[METRIC_KEY].labels(endpoint="/review", status="503").inc()
        return _json(503, {"error": "review queue unavailable, retry later"})
    request.app[METRIC_KEY].labels(endpoint="/review", status="200").inc()
    return _json(200, {"items": [item.to_dict() for item in items]})


async def get_metrics(request: web.Request) -> web.Response:
    from prometheus_client import generate_latest

    return web.Response(body=generate_latest(request.app[REGISTRY_KEY]), content_type="text/plain")


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None,
               serve_metrics: bool = False, bind_host: str | None = None) -> web.Application:
    """The API as an application; Kafka and Elasticsearch clients open on startup, close on cleanup. Raises
    ValueError without a token, or for a tokens file it cannot use (it is read once, here). ``serve_metrics``
    adds /metrics, which needs no token and so answers only this machine's names in the Host header
    (finsent.allowed_hosts), ``bind_host`` (default FINSENT_LABELS_HOST) among them."""
    auth = LabelAuth.from_settings(settings)
    registry = registry or CollectorRegistry()
    requests = Counter("finsent_label_api_requests", "Labels API requests by endpoint and status",
                       ["endpoint", "status"], registry=registry)
    # The rate limit runs first, so a client guessing tokens is slowed down as well.
    limited = rate_limit.middleware(TokenBucketLimiter(settings.label_rate_limit, settings.label_rate_burst),
                                    exempt={"/metrics"},
                                    on_limited=lambda r: requests.labels(endpoint=_endpoint(r), status="429").inc())
    middlewares = [limited, _auth]
    if serve_metrics:
        allowed = allowed_hosts.AllowedHosts.of(settings, bind_host or settings.labels_host)
        middlewares.insert(0, allowed_hosts.middleware(allowed, paths={"/metrics"}))
    app = web.Application(middlewares=middlewares, client_max_size=settings.label_max_bytes + 1024)
    app[SETTINGS_KEY] = settings
    app[AUTH_KEY] = auth
    app[REGISTRY_KEY] = registry
    app[METRIC_KEY] = requests
    if serve_metrics:
        app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/labels", post_labels)
    app.router.add_get("/review", get_review)

    async def clients(app: web.Application):
        from finsent import clients as factory

        loop = asyncio.get_running_loop()
        # Not the default executor: a stop while Kafka is away would wait for its thread at exit (stop_signals).
        app[PUBLISHER_KEY] = await in_daemon_thread(LabelPublisher(settings).start)
        app[ES_KEY] = factory.elasticsearch(settings)
        yield
        await loop.run_in_executor(None, app[PUBLISHER_KEY].close)
        app[ES_KEY].close()

    app.cleanup_ctx.append(clients)
    return app
